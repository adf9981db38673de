#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use super::*;

fn policy(spec: Value) -> CompiledPolicy {
    let spec: DatabasePolicySpec = serde_json::from_value(spec).unwrap();
    CompiledPolicy::compile("p", &spec).unwrap()
}

fn obj(kind: &str, ns: Option<&str>, spec: Value) -> Value {
    let mut metadata = json!({"name": "x"});
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

fn violations(p: &CompiledPolicy, o: &Value) -> Vec<String> {
    let subject = Subject {
        kind: o["kind"].as_str().unwrap(),
        object: o,
        old_object: None,
        operation: "CREATE",
        namespace_labels: None,
        instance: None,
    };
    p.evaluate(&subject, false)
        .into_iter()
        .map(|v| v.describe())
        .collect()
}

#[test]
fn every_rule_type_refuses_the_violating_and_admits_the_compliant() {
    // (policy, violating object, compliant object, rule named in the message)
    let cases: Vec<(Value, Value, Value, &str)> = vec![
        (
            json!({"naming": {"database": {"pattern": "^[a-z_]+$", "prefix": "{namespace}_"}}}),
            obj("Database", Some("team-a"), json!({"name": "orders"})),
            obj("Database", Some("team-a"), json!({"name": "team_a_orders"})),
            "naming.database",
        ),
        (
            json!({"naming": {"user": {"pattern": "^svc_"}}}),
            obj("DatabaseUser", Some("a"), json!({"username": "bob"})),
            obj("DatabaseUser", Some("a"), json!({"username": "svc_bob"})),
            "naming.user",
        ),
        (
            json!({"requiredLabels": [{"key": "team", "valuePattern": "^[a-z]+$"}]}),
            json!({"kind": "Database", "metadata": {"name": "x", "namespace": "a", "labels": {"team": "A1"}}, "spec": {}}),
            json!({"kind": "Database", "metadata": {"name": "x", "namespace": "a", "labels": {"team": "pay"}}, "spec": {}}),
            "requiredLabels[team]",
        ),
        (
            json!({"requiredAnnotations": [{"key": "example.com/owner"}]}),
            obj("DatabaseRole", Some("a"), json!({"roleName": "r"})),
            json!({"kind": "DatabaseRole", "metadata": {"name": "x", "namespace": "a", "annotations": {"example.com/owner": "me"}}, "spec": {"roleName": "r"}}),
            "requiredAnnotations[example.com/owner]",
        ),
        (
            json!({"deletion": {"requireDeletionProtection": true}}),
            obj(
                "Database",
                Some("a"),
                json!({"name": "d", "deletionProtection": false}),
            ),
            obj(
                "Database",
                Some("a"),
                json!({"name": "d", "deletionProtection": true}),
            ),
            "deletion.requireDeletionProtection",
        ),
        (
            json!({"deletion": {"allowedDeletionPolicies": ["Retain"]}}),
            obj(
                "Database",
                Some("a"),
                json!({"name": "d", "deletionPolicy": "Delete"}),
            ),
            obj("Database", Some("a"), json!({"name": "d"})),
            "deletion.allowedDeletionPolicies",
        ),
        (
            json!({"passwordPolicy": {"minLength": 24}}),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "passwordSecret": {"secretName": "s", "length": 16}}),
            ),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "passwordSecret": {"secretName": "s", "length": 32}}),
            ),
            "passwordPolicy.minLength",
        ),
        (
            json!({"passwordPolicy": {"requireRotation": true, "maxRotationAge": "90d"}}),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "passwordRotation": {"enabled": true, "maxAge": "180d"}}),
            ),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "passwordRotation": {"enabled": true, "maxAge": "30d"}}),
            ),
            "passwordPolicy.maxRotationAge",
        ),
        (
            json!({"passwordPolicy": {"forbidExistingPasswords": true}}),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "existingPasswordSecret": {"name": "s", "key": "k"}}),
            ),
            obj("DatabaseUser", Some("a"), json!({"username": "u"})),
            "passwordPolicy.forbidExistingPasswords",
        ),
        (
            json!({"privileges": {"forbidSuperuser": true}}),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "postgres": {"superuser": true}}),
            ),
            obj(
                "DatabaseUser",
                Some("a"),
                json!({"username": "u", "postgres": {"superuser": false}}),
            ),
            "privileges.forbidSuperuser",
        ),
        (
            json!({"privileges": {"forbidAllOnAll": true}}),
            obj(
                "DatabaseGrant",
                Some("a"),
                json!({"mysql": {"grants": [{"level": "global", "privileges": ["ALL PRIVILEGES"]}]}}),
            ),
            obj(
                "DatabaseGrant",
                Some("a"),
                json!({"mysql": {"grants": [{"level": "database", "database": "d", "privileges": ["ALL"]}]}}),
            ),
            "privileges.forbidAllOnAll",
        ),
        (
            json!({"privileges": {"allowed": {"table": ["SELECT", "INSERT"]}}}),
            obj(
                "DatabaseGrant",
                Some("a"),
                json!({"postgres": {"grants": [{"database": "d", "schema": "public", "tables": ["t"], "privileges": ["SELECT", "DELETE"]}]}}),
            ),
            obj(
                "DatabaseGrant",
                Some("a"),
                json!({"postgres": {"grants": [{"database": "d", "schema": "public", "tables": ["t"], "privileges": ["select"]}, {"database": "d", "privileges": ["CONNECT"]}]}}),
            ),
            "privileges.allowed.table",
        ),
        (
            json!({"backup": {"requireEncryption": true, "allowedStorageTypes": ["s3"]}}),
            obj(
                "DatabaseBackup",
                Some("a"),
                json!({"storage": {"type": "s3"}}),
            ),
            obj(
                "DatabaseBackup",
                Some("a"),
                json!({"storage": {"type": "s3"}, "encryption": {"enabled": true}}),
            ),
            "backup.requireEncryption",
        ),
        (
            json!({"backup": {"allowedStorageTypes": ["s3"]}}),
            obj(
                "DatabaseBackupSchedule",
                Some("a"),
                json!({"template": {"spec": {"storage": {"type": "pvc"}}}}),
            ),
            obj(
                "DatabaseBackupSchedule",
                Some("a"),
                json!({"template": {"spec": {"storage": {"type": "s3"}}}}),
            ),
            "backup.allowedStorageTypes",
        ),
        (
            json!({"backup": {"minRetention": {"keepDaily": 7}}}),
            obj(
                "DatabaseBackupSchedule",
                Some("a"),
                json!({"retention": {"keepDaily": 3}}),
            ),
            obj(
                "DatabaseBackupSchedule",
                Some("a"),
                json!({"retention": {"keepDaily": 7}}),
            ),
            "backup.minRetention.keepDaily",
        ),
        (
            json!({"access": {"allowedInstances": ["shared-pg"]}}),
            obj(
                "Database",
                Some("a"),
                json!({"name": "d", "instanceRef": {"name": "prod-pg"}}),
            ),
            obj(
                "Database",
                Some("a"),
                json!({"name": "d", "instanceRef": {"name": "shared-pg"}}),
            ),
            "access.allowedInstances",
        ),
        (
            json!({"access": {"allowedClusters": ["eu-1"]}}),
            obj(
                "DatabaseInstance",
                Some("a"),
                json!({"engine": "postgres", "clusterRef": {"name": "us-1"}}),
            ),
            obj(
                "DatabaseInstance",
                Some("a"),
                json!({"engine": "postgres", "clusterRef": {"name": "eu-1"}}),
            ),
            "access.allowedClusters",
        ),
        (
            json!({"rego": [{"name": "pii", "module": "package dbprov.pii\n\nviolation contains {\"msg\": msg} if {\n  some g in input.review.object.spec.postgres.grants\n  g.schema == \"pii\"\n  not input.review.object.metadata.labels[\"pii-approved\"]\n  msg := \"grants on schema pii need the label pii-approved\"\n}\n"}]}),
            obj(
                "DatabaseGrant",
                Some("a"),
                json!({"postgres": {"grants": [{"database": "d", "schema": "pii", "tables": ["t"], "privileges": ["SELECT"]}]}}),
            ),
            json!({"kind": "DatabaseGrant", "metadata": {"name": "x", "namespace": "a", "labels": {"pii-approved": "yes"}}, "spec": {"postgres": {"grants": [{"database": "d", "schema": "pii", "tables": ["t"], "privileges": ["SELECT"]}]}}}),
            "rego/pii",
        ),
    ];
    for (spec, bad, good, rule) in cases {
        let p = policy(spec.clone());
        let found = violations(&p, &bad);
        assert!(
            found.iter().any(|m| m.contains(&format!("rule {rule}:"))),
            "{spec}: expected {rule} for {bad}, got {found:?}"
        );
        assert_eq!(
            violations(&p, &good),
            Vec::<String>::new(),
            "{spec}: {good}"
        );
    }
}

#[test]
fn gatekeeper_v0_rego_is_read_too() {
    let p = policy(
        json!({"rego": [{"name": "owner", "module": "package k8sowner\n\nviolation[{\"msg\": msg}] {\n  not input.review.object.metadata.labels.owner\n  msg := \"owner label required\"\n}\n"}]}),
    );
    let found = violations(&p, &obj("Database", Some("a"), json!({"name": "d"})));
    assert_eq!(
        found,
        vec!["DatabasePolicy p rule rego/owner: owner label required"]
    );
}

#[test]
fn bad_patterns_and_modules_make_the_policy_invalid_naming_the_field() {
    let spec: DatabasePolicySpec = serde_json::from_value(json!({
        "naming": {"database": {"pattern": "(?=x)"}},
        "passwordPolicy": {"forbiddenPatterns": ["ok", "(unclosed"], "maxRotationAge": "soon"},
        "rego": [{"name": "broken", "module": "package x\nviolation contains msg if {"}],
    }))
    .unwrap();
    let errors: Vec<String> = CompiledPolicy::compile("p", &spec)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let fields = [
        "spec.naming.database.pattern",
        "spec.passwordPolicy.forbiddenPatterns[1]",
        "spec.passwordPolicy.maxRotationAge",
        "spec.rego[0].module",
    ];
    for f in fields {
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{f}:"))),
            "{f} not in {errors:?}"
        );
    }
}

#[test]
fn scope_by_kind_namespace_selector_cluster_and_engine() {
    let p = policy(json!({
        "match": {
            "kinds": ["Database"],
            "excludedNamespaces": ["sandbox"],
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "engines": ["postgres"],
        },
        "deletion": {"requireDeletionProtection": true},
    }));
    let o = obj("Database", Some("a"), json!({"name": "d"}));
    let prod: std::collections::BTreeMap<String, String> =
        [("env".to_owned(), "prod".to_owned())].into();
    let pg = InstanceFacts {
        cluster: "c".into(),
        engine: "postgres".into(),
    };
    let my = InstanceFacts {
        cluster: "c".into(),
        engine: "mariadb".into(),
    };
    let check = |o: &Value, labels: Option<&std::collections::BTreeMap<String, String>>, i| {
        p.evaluate(
            &Subject {
                kind: o["kind"].as_str().unwrap(),
                object: o,
                old_object: None,
                operation: "CREATE",
                namespace_labels: labels,
                instance: i,
            },
            false,
        )
        .len()
    };
    assert_eq!(check(&o, Some(&prod), Some(&pg)), 1);
    assert_eq!(check(&o, Some(&prod), Some(&my)), 0, "other engine");
    assert_eq!(check(&o, Some(&prod), None), 0, "instance unknown");
    assert_eq!(
        check(&o, Some(&Default::default()), Some(&pg)),
        0,
        "namespace not selected"
    );
    let sandbox = obj("Database", Some("sandbox"), json!({"name": "d"}));
    assert_eq!(check(&sandbox, Some(&prod), Some(&pg)), 0, "excluded");
    let user = obj("DatabaseUser", Some("a"), json!({"username": "u"}));
    assert_eq!(check(&user, Some(&prod), Some(&pg)), 0, "other kind");
    // Instance scope: no ValidatingAdmissionPolicy, the webhook checks every rule.
    assert!(p.needs_cel_off());
    assert!(cel::admission_objects(&p, "default", &[]).is_none());
}

#[test]
fn the_admission_policy_carries_each_rule_and_binds_the_action() {
    let p = policy(json!({
        "enforcementAction": "warn",
        "match": {"namespaces": ["team-a"], "labelSelector": {"matchLabels": {"tier": "prod"}}},
        "naming": {"database": {"prefix": "{namespace}_"}},
        "passwordPolicy": {"maxRotationAge": "90d"},
        "access": {"allowedClusters": ["eu-1"]},
    }));
    let (vap, binding) =
        cel::admission_objects(&p, "local", &["system:serviceaccount:dbprov:hub".into()]).unwrap();
    let validations = vap["spec"]["validations"].as_array().unwrap();
    // maxRotationAge has no CEL; allowedClusters only for instance kinds.
    assert_eq!(validations.len(), 2, "{validations:#?}");
    assert!(
        validations[0]["expression"]
            .as_str()
            .unwrap()
            .contains("object.metadata.namespace.replace(\"-\", \"_\") + \"_\"")
    );
    assert!(
        validations[1]["expression"]
            .as_str()
            .unwrap()
            .contains(": \"local\") in [\"eu-1\"]")
    );
    assert_eq!(binding["spec"]["validationActions"], json!(["Warn"]));
    assert_eq!(
        binding["spec"]["matchResources"]["objectSelector"],
        json!({"matchLabels": {"tier": "prod"}})
    );
    let conditions = vap["spec"]["matchConditions"].to_string();
    assert!(conditions.contains("system:serviceaccount:dbprov:hub"));
    assert!(conditions.contains("deletionTimestamp"));
    // The webhook checks what the apiserver does not.
    assert!(p.needs_webhook());
    // The webhook evaluates only those: a user breaking a CEL-checked rule (its namespace
    // prefix does not apply to users) and maxRotationAge reports maxRotationAge alone.
    let user = json!({"kind": "DatabaseUser",
        "metadata": {"name": "x", "namespace": "team-a", "labels": {"tier": "prod"}},
        "spec": {"username": "u", "passwordRotation": {"enabled": true, "maxAge": "180d"}}});
    let subject = Subject {
        kind: "DatabaseUser",
        object: &user,
        old_object: None,
        operation: "CREATE",
        namespace_labels: None,
        instance: None,
    };
    let rules: Vec<String> = p
        .evaluate(&subject, true)
        .into_iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, vec!["passwordPolicy.maxRotationAge"]);
    // A CEL-checked rule is left to the apiserver by the webhook, not by the reconcile check.
    let db = json!({"kind": "Database",
        "metadata": {"name": "x", "namespace": "team-a", "labels": {"tier": "prod"}},
        "spec": {"name": "orders"}});
    let subject = Subject {
        kind: "Database",
        object: &db,
        ..subject
    };
    assert!(p.evaluate(&subject, true).is_empty());
    assert_eq!(p.evaluate(&subject, false).len(), 1);
}

#[test]
fn password_rules_merge_the_deny_policies_that_match() {
    let strict = policy(json!({"passwordPolicy": {"minLength": 40, "requireDigits": true}}));
    let warn = policy(json!({"enforcementAction": "warn", "passwordPolicy": {"minLength": 64}}));
    let mut map = PolicyMap::new();
    map.insert("strict".into(), std::sync::Arc::new(strict));
    map.insert("warn".into(), std::sync::Arc::new(warn));
    let o = obj("DatabaseUser", Some("a"), json!({"username": "u"}));
    let rules = password_rules(
        &map,
        &Subject {
            kind: "DatabaseUser",
            object: &o,
            old_object: None,
            operation: "RECONCILE",
            namespace_labels: None,
            instance: None,
        },
    )
    .unwrap();
    assert_eq!(rules.min_length, Some(40));
    assert!(rules.require_digits);
}
