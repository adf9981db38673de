//! The `storage` block of RUN_BACKUP, DELETE_BACKUP and RESTORE, from a `storage` of a
//! DatabaseBackup (or a schedule's template, or a restore's `fromPath`).
//!
//! Not carried: `storage.gcs.secretRef.namespace` (the contract's GCS key reference has no
//! namespace: the key is read from the resource's namespace, `secretNamespace`; any other
//! namespace is refused by [`refusal`], so that a manifest cannot read another tenant's
//! Secret).

use dbprov_contract::storage::{
    AzureSecretRef, AzureSpec, GcsKeyRef, GcsSpec, PvcSpec, S3Keys, S3SecretRef, S3Spec,
    StorageSpec, StorageType,
};

use crate::{
    api::backup::{self as api, StorageConfig},
    controller::reason::Reason,
};

/// The contract's storage type for the API's.
pub fn storage_type(t: api::StorageType) -> StorageType {
    match t {
        api::StorageType::S3 => StorageType::S3,
        api::StorageType::Gcs => StorageType::Gcs,
        api::StorageType::Azure => StorageType::Azure,
        api::StorageType::Pvc => StorageType::Pvc,
    }
}

/// Why `s` (at `field`, e.g. `spec.storage`) cannot be served for a resource in `namespace`:
/// the block `type` names is missing (the reference schema accepts that), or its credentials
/// Secret (GCS, Azure) is in another namespace, which the agent must not read.
pub fn refusal(s: &StorageConfig, namespace: &str, field: &str) -> Option<(Reason, String)> {
    let t = storage_type(s.type_).as_str();
    let present = match s.type_ {
        api::StorageType::S3 => s.s3.is_some(),
        api::StorageType::Gcs => s.gcs.is_some(),
        api::StorageType::Azure => s.azure.is_some(),
        api::StorageType::Pvc => s.pvc.is_some(),
    };
    if !present {
        return Some((
            Reason::InvalidSpec,
            format!("{field}.type is {t} but {field}.{t} is not set: add the {t} block"),
        ));
    }
    let paths = [
        ("s3.prefix", s.s3.as_ref().and_then(|x| x.prefix.as_deref())),
        (
            "gcs.prefix",
            s.gcs.as_ref().and_then(|x| x.prefix.as_deref()),
        ),
        (
            "azure.prefix",
            s.azure.as_ref().and_then(|x| x.prefix.as_deref()),
        ),
        (
            "pvc.subPath",
            s.pvc.as_ref().and_then(|x| x.sub_path.as_deref()),
        ),
    ];
    for (name, path) in paths {
        if let Some(refused) = path.and_then(|p| dotdot(&format!("{field}.{name}"), p)) {
            return Some(refused);
        }
    }
    let (block, other) = match s.type_ {
        api::StorageType::Gcs => (
            "gcs",
            s.gcs
                .as_ref()
                .and_then(|g| g.secret_ref.as_ref())
                .and_then(|r| r.namespace.as_deref()),
        ),
        api::StorageType::Azure => (
            "azure",
            s.azure
                .as_ref()
                .and_then(|a| a.secret_ref.as_ref())
                .and_then(|r| r.namespace.as_deref()),
        ),
        api::StorageType::S3 | api::StorageType::Pvc => ("", None),
    };
    foreign_secret(&format!("{field}.{block}.secretRef"), other, namespace)
}

/// Why the path `p` at `field` cannot be used: a `..` segment would leave the prefix (a
/// volume's directory, or another tenant's keys once a client normalises the URL path).
pub fn dotdot(field: &str, p: &str) -> Option<(Reason, String)> {
    p.split('/').any(|s| s == "..").then(|| {
        (
            Reason::InvalidSpec,
            format!(
                "{field} {p:?} must not contain '..' segments: name the path from the storage root"
            ),
        )
    })
}

/// Why a Secret reference at `field` (e.g. `spec.encryption.secretRef`) whose `namespace` is
/// `other` cannot be followed by a resource in `namespace`: the agent reads Secrets only in
/// the resource's own namespace (tenant isolation: nothing yet lets another namespace
/// consent to being read). Naming the own namespace is the same as leaving it out.
pub fn foreign_secret(
    field: &str,
    other: Option<&str>,
    namespace: &str,
) -> Option<(Reason, String)> {
    let other = other.filter(|n| *n != namespace)?;
    Some((
        Reason::NotSupported,
        format!(
            "{field}.namespace {other:?} is not supported: the Secret must be in this \
             resource's namespace {namespace:?} (a manifest may not read another namespace's \
             Secrets); copy it there and remove the namespace"
        ),
    ))
}

/// Where artifacts are, as the agent reads it.
pub fn storage(s: &StorageConfig) -> StorageSpec {
    StorageSpec {
        type_: storage_type(s.type_),
        s3: s.s3.as_ref().map(|s3| S3Spec {
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            prefix: s3.prefix.clone(),
            force_path_style: s3.force_path_style,
            secret_ref: s3.secret_ref.as_ref().map(|r| S3SecretRef {
                name: r.name.clone(),
                keys: r.keys.as_ref().map(|k| S3Keys {
                    access_key: k.access_key.clone(),
                    secret_key: k.secret_key.clone(),
                }),
            }),
            part_size_mib: s3.part_size_mib,
        }),
        gcs: s.gcs.as_ref().map(|gcs| GcsSpec {
            bucket: gcs.bucket.clone(),
            prefix: gcs.prefix.clone(),
            secret_ref: gcs.secret_ref.as_ref().map(|r| GcsKeyRef {
                name: r.name.clone(),
                key: r.key.clone(),
            }),
            endpoint: gcs.endpoint.clone(),
        }),
        azure: s.azure.as_ref().map(|az| AzureSpec {
            storage_account: az.storage_account.clone(),
            container: az.container.clone(),
            prefix: az.prefix.clone(),
            secret_ref: az.secret_ref.as_ref().map(|r| AzureSecretRef {
                name: r.name.clone(),
                namespace: r.namespace.clone(),
            }),
            endpoint: az.endpoint.clone(),
        }),
        pvc: s.pvc.as_ref().map(|p| PvcSpec {
            claim_name: p.claim_name.clone(),
            sub_path: p.sub_path.clone(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::{DatabaseBackup, DatabaseBackupSchedule, DatabaseRestore},
        controller::payload::corpus,
    };

    /// `storage_json` as the hub had it (controller/backup.rs; restore.rs the same).
    pub(crate) fn legacy(s: &StorageConfig) -> serde_json::Value {
        serde_json::to_value(s).unwrap_or(serde_json::Value::Null)
    }

    /// What the contract reads of `legacy`: without `gcs.secretRef.namespace`.
    pub(crate) fn carried(mut today: serde_json::Value) -> serde_json::Value {
        // (Not `today["gcs"]`: indexing a JSON object mutably inserts the key.)
        if let Some(o) = today
            .get_mut("gcs")
            .and_then(|g| g.get_mut("secretRef"))
            .and_then(|r| r.as_object_mut())
        {
            o.remove("namespace");
        }
        today
    }

    fn check(label: &str, s: &StorageConfig) {
        let converted = storage(s);
        assert_eq!(
            converted,
            corpus::as_contract::<StorageSpec>(carried(legacy(s))),
            "{label}"
        );
        corpus::round_trips(&converted);
    }

    #[test]
    fn every_corpus_storage_converts_to_what_the_hub_sent() {
        for (label, b) in corpus::objects::<DatabaseBackup>("DatabaseBackup") {
            check(&label, &b.spec.storage);
        }
        for (label, s) in corpus::objects::<DatabaseBackupSchedule>("DatabaseBackupSchedule") {
            check(&label, &s.spec.template.spec.storage);
        }
        for (label, r) in corpus::objects::<DatabaseRestore>("DatabaseRestore") {
            if let Some(from) = &r.spec.from_path {
                check(&label, &from.storage);
            }
        }
    }

    #[test]
    fn s3_with_custom_keys_is_sent_as_today() {
        // tests/corpus/valid/dpo/backups.yaml, orders-s3.
        let s: StorageConfig = serde_json::from_value(json!({
            "type": "s3",
            "s3": {"bucket": "dbprov-backups", "region": "eu-west-1",
                "endpoint": "https://minio.storage.svc:9000", "prefix": "team-a/orders",
                "forcePathStyle": true, "partSizeMiB": 16,
                "secretRef": {"name": "s3-credentials", "keys": {"accessKey": "ACCESS_KEY"}}}
        }))
        .unwrap();
        let today = json!({
            "type": "s3",
            "s3": {"bucket": "dbprov-backups", "region": "eu-west-1",
                "endpoint": "https://minio.storage.svc:9000", "prefix": "team-a/orders",
                "forcePathStyle": true, "partSizeMiB": 16,
                "secretRef": {"name": "s3-credentials",
                    "keys": {"accessKey": "ACCESS_KEY", "secretKey": "AWS_SECRET_ACCESS_KEY"}}}
        });
        assert_eq!(legacy(&s), today);
        let converted = storage(&s);
        assert_eq!(converted, corpus::as_contract::<StorageSpec>(today));
        assert_eq!(converted.prefix(), "team-a/orders");
        corpus::round_trips(&converted);
    }

    #[test]
    fn a_gcs_key_namespace_has_no_place_in_the_contract() {
        let s: StorageConfig = serde_json::from_value(json!({
            "type": "gcs",
            "gcs": {"bucket": "bkt", "secretRef": {"name": "sa", "key": "sa.json", "namespace": "other"}}
        }))
        .unwrap();
        // Sent today, refused by the contract's deny_unknown_fields.
        let today = legacy(&s);
        assert_eq!(today["gcs"]["secretRef"]["namespace"], "other");
        let refused = dbprov_contract::from_json::<StorageSpec>(&today.to_string());
        assert!(refused.is_err());
        assert_eq!(
            storage(&s).gcs.unwrap().secret_ref,
            Some(GcsKeyRef {
                name: "sa".into(),
                key: "sa.json".into()
            })
        );
    }
}
