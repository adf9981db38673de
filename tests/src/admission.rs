//! The hub's admission webhook against a real apiserver: a serving certificate the apiserver
//! trusts (for `127.0.0.1`), the MutatingWebhookConfiguration the chart installs (same rules
//! and settings, aimed at a URL instead of a Service), ServiceAccounts allowed to edit dbprov
//! resources, and clients that act as them.

use std::path::{Path, PathBuf};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{
            MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
        },
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    },
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{EnvError, KubeEnv};

/// The name of the webhook in the configuration (as the chart names it).
pub const WEBHOOK_NAME: &str = "requested-by.dbops.dbprovision.io";

fn fail(message: String) -> EnvError {
    EnvError::Client {
        component: "admission webhook setup".into(),
        message,
    }
}

/// A CA and a serving certificate for `127.0.0.1`/`localhost`, written to `dir`.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// PEM of the CA (the webhook configuration's caBundle).
    pub ca_pem: String,
    /// The serving certificate file.
    pub cert: PathBuf,
    /// Its key file.
    pub key: PathBuf,
}

/// Issues a CA and a serving certificate for the loopback webhook into `dir`.
pub fn serving_cert(dir: &Path) -> Result<ServingCert, EnvError> {
    let issue = || -> Result<(String, String, String), rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "dbprov-test-webhook-ca");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "dbprov-hub admission webhook");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca)?;
        Ok((ca.pem(), cert.pem(), key.serialize_pem()))
    };
    let (ca_pem, cert_pem, key_pem) = issue().map_err(|e| fail(format!("issuing: {e}")))?;
    let cert = dir.join("webhook.crt");
    let key = dir.join("webhook.key");
    for (path, pem) in [(&cert, &cert_pem), (&key, &key_pem)] {
        std::fs::write(path, pem).map_err(EnvError::io(format!("writing {}", path.display())))?;
    }
    Ok(ServingCert { ca_pem, cert, key })
}

/// The MutatingWebhookConfiguration of `charts/dbprov-hub/templates/admission-webhook.yaml`,
/// calling `url` instead of the hub's Service.
pub fn requested_by_configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
    failure_policy: &str,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(url.to_owned()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["dbops.dbprovision.io".to_owned()]),
                api_versions: Some(vec!["*".to_owned()]),
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                // `*` is every resource of the group but none of their subresources (that
                // would be `*/*`): `/status` writes are never sent.
                resources: Some(vec!["*".to_owned()]),
                scope: Some("*".to_owned()),
            }]),
            failure_policy: Some(failure_policy.to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            reinvocation_policy: Some("Never".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(5),
            namespace_selector: None,
            object_selector: None,
            match_conditions: None,
        }]),
    }
}

/// The name of the DatabasePolicy webhook in its configuration (as the chart names it).
pub const POLICY_WEBHOOK_NAME: &str = "policy.dbops.dbprovision.io";

/// The ValidatingWebhookConfiguration of `charts/dbprov-hub/templates/admission-webhook.yaml`
/// (the DatabasePolicy webhook), calling `url` instead of the hub's Service, applied with
/// `failure_policy`.
pub async fn register_policy_webhook(
    client: &kube::Client,
    name: &str,
    url: &str,
    ca_pem: &str,
    failure_policy: &str,
) -> Result<(), EnvError> {
    let api: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    let kinds = [
        "databaseinstances",
        "clusterdatabaseinstances",
        "databases",
        "databaseusers",
        "databaseroles",
        "clusterdatabaseroles",
        "databasegrants",
        "clusterdatabasegrants",
        "databasebackups",
        "databasebackupschedules",
        "databaserestores",
        "databasemigrations",
    ];
    let value = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": POLICY_WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": url,
                "caBundle": ByteString(ca_pem.as_bytes().to_vec()),
            },
            "rules": [{
                "apiGroups": ["dbops.dbprovision.io"],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": kinds,
                "scope": "*",
            }],
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": 5,
        }],
    });
    api.patch(
        name,
        &PatchParams::apply(crate::manifests::FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|e| {
        fail(format!(
            "applying ValidatingWebhookConfiguration {name}: {e}"
        ))
    })?;
    Ok(())
}

/// Creates or replaces (server-side apply) a webhook configuration.
pub async fn register(
    client: &kube::Client,
    configuration: &MutatingWebhookConfiguration,
) -> Result<(), EnvError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = configuration.metadata.name.clone().unwrap_or_default();
    let mut configuration = configuration.clone();
    configuration.metadata.managed_fields = None;
    let value = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": configuration.webhooks,
    });
    api.patch(
        &name,
        &PatchParams::apply(crate::manifests::FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|e| fail(format!("applying MutatingWebhookConfiguration {name}: {e}")))?;
    Ok(())
}

/// Creates ServiceAccount `namespace/name`, allowed everything on dbprov resources in every
/// namespace (and their `/status`), and returns a client authenticated as it with a token
/// from the TokenRequest API.
pub async fn service_account_client(
    env: &KubeEnv,
    namespace: &str,
    name: &str,
) -> Result<(kube::Client, PathBuf), EnvError> {
    let client = env.client();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .map_err(|e| fail(format!("creating ServiceAccount {namespace}/{name}: {e}")))?;
    let role_name = "dbprov-test-editor";
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name},
        "rules": [PolicyRule {
            api_groups: Some(vec!["dbops.dbprovision.io".to_owned()]),
            resources: Some(vec!["*".to_owned(), "*/status".to_owned()]),
            verbs: vec!["*".to_owned()],
            ..Default::default()
        }],
    });
    roles
        .patch(
            role_name,
            &PatchParams::apply(crate::manifests::FIELD_MANAGER).force(),
            &Patch::Apply(role),
        )
        .await
        .map_err(|e| fail(format!("applying ClusterRole {role_name}: {e}")))?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("dbprov-test-editor-{namespace}-{name}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: role_name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            api_group: None,
        }]),
    };
    Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await
        .map_err(|e| fail(format!("binding ServiceAccount {namespace}/{name}: {e}")))?;
    let kubeconfig = env.service_account_kubeconfig(namespace, name).await?;
    Ok((client_from_kubeconfig(&kubeconfig).await?, kubeconfig))
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, EnvError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}
