//! Which resources a policy applies to (`spec.match`).

use std::collections::BTreeMap;

use crate::{
    api::policy::{DatabasePolicySpec, PolicyMatch},
    labels::selector_matches,
};

use super::{CompileError, Subject};

/// Whether `subject` is in scope. Namespace criteria (`namespaces`, `namespaceSelector`) are
/// about namespaced resources: a cluster-scoped resource matches only a policy without them
/// (`excludedNamespaces` never excludes it).
pub fn matches(m: Option<&PolicyMatch>, subject: &Subject<'_>) -> bool {
    let Some(m) = m else {
        return true;
    };
    if let Some(kinds) = &m.kinds
        && !kinds.iter().any(|k| kind_name(*k) == subject.kind)
    {
        return false;
    }
    match subject.namespace() {
        Some(ns) => {
            if m.namespaces
                .as_ref()
                .is_some_and(|l| !l.iter().any(|n| n == ns))
            {
                return false;
            }
            if m.excluded_namespaces
                .as_ref()
                .is_some_and(|l| l.iter().any(|n| n == ns))
            {
                return false;
            }
            if let Some(sel) = &m.namespace_selector {
                // Unknown namespace labels: not matched here; the apiserver (binding) and the
                // reconcile check, which know them, decide.
                let Some(labels) = subject.namespace_labels else {
                    return false;
                };
                if !selector_matches(sel, labels) {
                    return false;
                }
            }
        }
        None => {
            if m.namespaces.is_some() || m.namespace_selector.is_some() {
                return false;
            }
        }
    }
    if let Some(sel) = &m.label_selector {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(subject.object["metadata"]["labels"].clone())
                .unwrap_or_default();
        if !selector_matches(sel, &labels) {
            return false;
        }
    }
    if m.clusters.is_some() || m.engines.is_some() {
        let Some(instance) = subject.instance else {
            return false;
        };
        if m.clusters
            .as_ref()
            .is_some_and(|c| !c.contains(&instance.cluster))
        {
            return false;
        }
        if m.engines.as_ref().is_some_and(|e| {
            !e.iter()
                .any(|e| engine_name(*e) == instance.engine.as_str())
        }) {
            return false;
        }
    }
    true
}

/// The kind as written in manifests.
pub fn kind_name(k: crate::api::policy::PolicyKind) -> &'static str {
    use crate::api::policy::PolicyKind as K;
    match k {
        K::DatabaseInstance => "DatabaseInstance",
        K::ClusterDatabaseInstance => "ClusterDatabaseInstance",
        K::Database => "Database",
        K::DatabaseUser => "DatabaseUser",
        K::DatabaseRole => "DatabaseRole",
        K::ClusterDatabaseRole => "ClusterDatabaseRole",
        K::DatabaseGrant => "DatabaseGrant",
        K::ClusterDatabaseGrant => "ClusterDatabaseGrant",
        K::DatabaseBackup => "DatabaseBackup",
        K::DatabaseBackupSchedule => "DatabaseBackupSchedule",
        K::DatabaseRestore => "DatabaseRestore",
        K::DatabaseMigration => "DatabaseMigration",
    }
}

/// The engine as written in manifests.
pub fn engine_name(e: crate::api::instance::Engine) -> &'static str {
    use crate::api::instance::Engine as E;
    match e {
        E::Postgres => "postgres",
        E::Mysql => "mysql",
        E::Mariadb => "mariadb",
        E::Cockroachdb => "cockroachdb",
        E::Clickhouse => "clickhouse",
    }
}

/// Every kind a policy can match, as written in manifests.
pub const ALL_KINDS: &[&str] = &[
    "DatabaseInstance",
    "ClusterDatabaseInstance",
    "Database",
    "DatabaseUser",
    "DatabaseRole",
    "ClusterDatabaseRole",
    "DatabaseGrant",
    "ClusterDatabaseGrant",
    "DatabaseBackup",
    "DatabaseBackupSchedule",
    "DatabaseRestore",
    "DatabaseMigration",
];

/// The kinds `spec.match` selects.
pub fn kinds(m: Option<&PolicyMatch>) -> Vec<&'static str> {
    match m.and_then(|m| m.kinds.as_ref()) {
        Some(k) => {
            let mut v: Vec<&'static str> = k.iter().map(|k| kind_name(*k)).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        None => ALL_KINDS.to_vec(),
    }
}

/// Problems of `spec.match` a schema cannot see.
pub fn check(spec: &DatabasePolicySpec) -> Result<(), Vec<CompileError>> {
    let mut errors = Vec::new();
    if let Some(m) = &spec.match_ {
        for (field, sel) in [
            ("match.namespaceSelector", &m.namespace_selector),
            ("match.labelSelector", &m.label_selector),
        ] {
            for (i, e) in sel
                .iter()
                .flat_map(|s| s.match_expressions.iter().flatten())
                .enumerate()
            {
                if !matches!(
                    e.operator.as_str(),
                    "In" | "NotIn" | "Exists" | "DoesNotExist"
                ) {
                    errors.push(CompileError {
                        field: format!("{field}.matchExpressions[{i}].operator"),
                        problem: format!(
                            "{:?} is not a label selector operator; use In, NotIn, Exists or DoesNotExist",
                            e.operator
                        ),
                    });
                }
            }
        }
        if m.kinds.as_ref().is_some_and(Vec::is_empty) {
            errors.push(CompileError {
                field: "match.kinds".into(),
                problem: "an empty list matches nothing; leave it out to match every kind".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What a policy matches, in words, for `kubectl get databasepolicies`.
pub fn describe_match(m: Option<&PolicyMatch>) -> String {
    let Some(m) = m else {
        return "all dbprov resources".into();
    };
    let mut parts = Vec::new();
    parts.push(match &m.kinds {
        Some(_) => kinds(Some(m)).join(","),
        None => "all kinds".into(),
    });
    if let Some(ns) = &m.namespaces {
        parts.push(format!("in {}", ns.join(",")));
    }
    if let Some(ns) = &m.excluded_namespaces {
        parts.push(format!("not in {}", ns.join(",")));
    }
    if m.namespace_selector.is_some() {
        parts.push("selected namespaces".into());
    }
    if m.label_selector.is_some() {
        parts.push("labelled".into());
    }
    if let Some(c) = &m.clusters {
        parts.push(format!("clusters {}", c.join(",")));
    }
    if let Some(e) = &m.engines {
        parts.push(format!(
            "engines {}",
            e.iter()
                .map(|e| engine_name(*e))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    parts.join(" ")
}
