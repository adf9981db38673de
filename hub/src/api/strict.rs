//! The rules dbprov checks beyond the Go operator's schema.
//!
//! dbprov's API types carry tighter constraints than db-provision-operator v0.14's CRDs
//! (SQL identifiers, Kubernetes names, durations, lengths). A manifest that operator's schema
//! accepts must apply here too, so for its 11 kinds the served CRDs keep only the
//! constraints that schema has ([`ADMISSION`]); the rest are checked by the hub before it acts
//! ([`violations`]) and reported in status (`InvalidSpec`, naming the field and what it must
//! be) — nothing is sent to an agent for such a spec. dbprov's own kinds (ManagedCluster,
//! DatabaseMigration, DatabasePolicy) keep every constraint at admission.

use std::{collections::HashMap, fmt, sync::LazyLock};

use serde_json::Value;

use crate::api::common;

/// The kinds db-provision-operator v0.14 has.
pub const REFERENCE_KINDS: [&str; 11] = [
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
];

/// The constraint keywords [`relax`] removes and [`violations`] checks.
pub const KEYWORDS: [&str; 7] = [
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
];

/// Constraints (kind, spec path, keyword) the Go operator's schema has too: they stay in the
/// served CRDs (with dbprov's value, which is never stricter — `api_compat` checks both
/// directions against the reference schemas).
pub const ADMISSION: &[(&str, &str, &str)] = &[
    (
        "ClusterDatabaseGrant",
        "spec.clusterInstanceRef.name",
        "minLength",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.mysql.grants[].privileges",
        "minItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.mysql.grants[].privileges",
        "maxItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.mysql.grants[].privileges[]",
        "pattern",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges",
        "minItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges",
        "maxItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges[]",
        "pattern",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.grants[].privileges",
        "minItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.grants[].privileges",
        "maxItems",
    ),
    (
        "ClusterDatabaseGrant",
        "spec.postgres.grants[].privileges[]",
        "pattern",
    ),
    (
        "ClusterDatabaseInstance",
        "spec.clickhouse.httpPort",
        "minimum",
    ),
    (
        "ClusterDatabaseInstance",
        "spec.clickhouse.httpPort",
        "maximum",
    ),
    (
        "ClusterDatabaseInstance",
        "spec.connection.host",
        "minLength",
    ),
    ("ClusterDatabaseInstance", "spec.connection.port", "minimum"),
    ("ClusterDatabaseInstance", "spec.connection.port", "maximum"),
    (
        "ClusterDatabaseInstance",
        "spec.healthCheck.intervalSeconds",
        "minimum",
    ),
    (
        "ClusterDatabaseInstance",
        "spec.healthCheck.timeoutSeconds",
        "minimum",
    ),
    (
        "ClusterDatabaseInstance",
        "spec.postgres.connectTimeout",
        "minimum",
    ),
    (
        "ClusterDatabaseRole",
        "spec.clusterInstanceRef.name",
        "minLength",
    ),
    (
        "ClusterDatabaseRole",
        "spec.mysql.grants[].privileges",
        "minItems",
    ),
    (
        "ClusterDatabaseRole",
        "spec.mysql.grants[].privileges",
        "maxItems",
    ),
    (
        "ClusterDatabaseRole",
        "spec.mysql.grants[].privileges[]",
        "pattern",
    ),
    (
        "ClusterDatabaseRole",
        "spec.postgres.grants[].privileges",
        "minItems",
    ),
    (
        "ClusterDatabaseRole",
        "spec.postgres.grants[].privileges",
        "maxItems",
    ),
    (
        "ClusterDatabaseRole",
        "spec.postgres.grants[].privileges[]",
        "pattern",
    ),
    ("ClusterDatabaseRole", "spec.roleName", "pattern"),
    ("ClusterDatabaseRole", "spec.roleName", "minLength"),
    ("ClusterDatabaseRole", "spec.roleName", "maxLength"),
    ("Database", "spec.clusterInstanceRef.name", "minLength"),
    ("Database", "spec.initSQL.inline", "maxItems"),
    ("Database", "spec.instanceRef.name", "minLength"),
    ("Database", "spec.mysql.charset", "pattern"),
    ("Database", "spec.mysql.collation", "pattern"),
    ("Database", "spec.name", "pattern"),
    ("Database", "spec.name", "minLength"),
    ("Database", "spec.name", "maxLength"),
    ("Database", "spec.owner", "pattern"),
    ("Database", "spec.owner", "maxLength"),
    ("Database", "spec.postgres.connectionLimit", "minimum"),
    (
        "Database",
        "spec.postgres.defaultPrivileges[].privileges",
        "minItems",
    ),
    (
        "Database",
        "spec.postgres.defaultPrivileges[].privileges",
        "maxItems",
    ),
    (
        "Database",
        "spec.postgres.defaultPrivileges[].privileges[]",
        "pattern",
    ),
    ("Database", "spec.postgres.ownership.roleName", "pattern"),
    ("Database", "spec.postgres.ownership.roleName", "maxLength"),
    ("Database", "spec.postgres.ownership.userName", "pattern"),
    ("Database", "spec.postgres.ownership.userName", "maxLength"),
    ("DatabaseBackup", "spec.activeDeadlineSeconds", "minimum"),
    ("DatabaseBackup", "spec.compression.level", "minimum"),
    ("DatabaseBackup", "spec.compression.level", "maximum"),
    ("DatabaseBackup", "spec.databaseRef.name", "minLength"),
    ("DatabaseBackup", "spec.postgres.jobs", "minimum"),
    (
        "DatabaseBackupSchedule",
        "spec.failedBackupsHistoryLimit",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepDaily",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepHourly",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepLast",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepMonthly",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepWeekly",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.retention.keepYearly",
        "minimum",
    ),
    ("DatabaseBackupSchedule", "spec.schedule", "minLength"),
    (
        "DatabaseBackupSchedule",
        "spec.successfulBackupsHistoryLimit",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.template.spec.activeDeadlineSeconds",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.template.spec.compression.level",
        "minimum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.template.spec.compression.level",
        "maximum",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.template.spec.databaseRef.name",
        "minLength",
    ),
    (
        "DatabaseBackupSchedule",
        "spec.template.spec.postgres.jobs",
        "minimum",
    ),
    (
        "DatabaseGrant",
        "spec.clickhouse.grants[].privileges",
        "minItems",
    ),
    (
        "DatabaseGrant",
        "spec.clickhouse.grants[].privileges",
        "maxItems",
    ),
    (
        "DatabaseGrant",
        "spec.clickhouse.grants[].privileges[]",
        "pattern",
    ),
    ("DatabaseGrant", "spec.databaseRef.name", "minLength"),
    (
        "DatabaseGrant",
        "spec.mysql.grants[].privileges",
        "minItems",
    ),
    (
        "DatabaseGrant",
        "spec.mysql.grants[].privileges",
        "maxItems",
    ),
    (
        "DatabaseGrant",
        "spec.mysql.grants[].privileges[]",
        "pattern",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges",
        "minItems",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges",
        "maxItems",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.defaultPrivileges[].privileges[]",
        "pattern",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.grants[].privileges",
        "minItems",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.grants[].privileges",
        "maxItems",
    ),
    (
        "DatabaseGrant",
        "spec.postgres.grants[].privileges[]",
        "pattern",
    ),
    ("DatabaseGrant", "spec.roleRef.name", "minLength"),
    ("DatabaseGrant", "spec.userRef.name", "minLength"),
    ("DatabaseInstance", "spec.clickhouse.httpPort", "minimum"),
    ("DatabaseInstance", "spec.clickhouse.httpPort", "maximum"),
    ("DatabaseInstance", "spec.connection.host", "minLength"),
    ("DatabaseInstance", "spec.connection.port", "minimum"),
    ("DatabaseInstance", "spec.connection.port", "maximum"),
    (
        "DatabaseInstance",
        "spec.healthCheck.intervalSeconds",
        "minimum",
    ),
    (
        "DatabaseInstance",
        "spec.healthCheck.timeoutSeconds",
        "minimum",
    ),
    (
        "DatabaseInstance",
        "spec.postgres.connectTimeout",
        "minimum",
    ),
    ("DatabaseRestore", "spec.activeDeadlineSeconds", "minimum"),
    ("DatabaseRestore", "spec.backupRef.name", "minLength"),
    (
        "DatabaseRestore",
        "spec.fromPath.compression.level",
        "minimum",
    ),
    (
        "DatabaseRestore",
        "spec.fromPath.compression.level",
        "maximum",
    ),
    ("DatabaseRestore", "spec.postgres.jobs", "minimum"),
    (
        "DatabaseRestore",
        "spec.target.clusterInstanceRef.name",
        "minLength",
    ),
    (
        "DatabaseRestore",
        "spec.target.databaseRef.name",
        "minLength",
    ),
    (
        "DatabaseRestore",
        "spec.target.instanceRef.name",
        "minLength",
    ),
    ("DatabaseRole", "spec.clusterInstanceRef.name", "minLength"),
    ("DatabaseRole", "spec.instanceRef.name", "minLength"),
    ("DatabaseRole", "spec.mysql.grants[].privileges", "minItems"),
    ("DatabaseRole", "spec.mysql.grants[].privileges", "maxItems"),
    (
        "DatabaseRole",
        "spec.mysql.grants[].privileges[]",
        "pattern",
    ),
    (
        "DatabaseRole",
        "spec.postgres.grants[].privileges",
        "minItems",
    ),
    (
        "DatabaseRole",
        "spec.postgres.grants[].privileges",
        "maxItems",
    ),
    (
        "DatabaseRole",
        "spec.postgres.grants[].privileges[]",
        "pattern",
    ),
    ("DatabaseRole", "spec.roleName", "pattern"),
    ("DatabaseRole", "spec.roleName", "minLength"),
    ("DatabaseRole", "spec.roleName", "maxLength"),
    ("DatabaseUser", "spec.clusterInstanceRef.name", "minLength"),
    ("DatabaseUser", "spec.instanceRef.name", "minLength"),
    ("DatabaseUser", "spec.mysql.failedLoginAttempts", "minimum"),
    (
        "DatabaseUser",
        "spec.mysql.maxConnectionsPerHour",
        "minimum",
    ),
    ("DatabaseUser", "spec.mysql.maxQueriesPerHour", "minimum"),
    ("DatabaseUser", "spec.mysql.maxUpdatesPerHour", "minimum"),
    ("DatabaseUser", "spec.mysql.maxUserConnections", "minimum"),
    ("DatabaseUser", "spec.mysql.passwordLockTime", "minimum"),
    (
        "DatabaseUser",
        "spec.passwordRotation.mysql.discardOldPasswordAfterDays",
        "minimum",
    ),
    (
        "DatabaseUser",
        "spec.passwordRotation.oldUserPolicy.gracePeriodDays",
        "minimum",
    ),
    ("DatabaseUser", "spec.passwordSecret.length", "minimum"),
    ("DatabaseUser", "spec.passwordSecret.length", "maximum"),
    ("DatabaseUser", "spec.postgres.connectionLimit", "minimum"),
    ("DatabaseUser", "spec.username", "pattern"),
    ("DatabaseUser", "spec.username", "minLength"),
    ("DatabaseUser", "spec.username", "maxLength"),
];

/// Removes from the spec schema of reference kind `kind` every constraint the Go operator's
/// schema does not have. Other kinds are left as they are.
pub fn relax(kind: &str, spec_schema: &mut Value) {
    if REFERENCE_KINDS.contains(&kind) {
        relax_at(kind, "spec", spec_schema);
    }
}

fn relax_at(kind: &str, path: &str, schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    for keyword in KEYWORDS {
        if !ADMISSION.contains(&(kind, path, keyword)) {
            obj.remove(keyword);
        }
    }
    for (key, child) in children_mut(obj) {
        relax_at(kind, &child_path(path, &key), child);
    }
}

/// `(segment, schema)` of the sub-schemas of a schema object: `.name` for properties, `[]`
/// for items, `{}` for map values.
fn children_mut(obj: &mut serde_json::Map<String, Value>) -> Vec<(String, &mut Value)> {
    let mut out = Vec::new();
    for (key, value) in obj.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Some(props) = value.as_object_mut() {
                    out.extend(props.iter_mut().map(|(k, v)| (format!(".{k}"), v)));
                }
            }
            "items" => out.push(("[]".to_owned(), value)),
            "additionalProperties" if value.is_object() => out.push(("{}".to_owned(), value)),
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(list) = value.as_array_mut() {
                    out.extend(list.iter_mut().map(|v| (String::new(), v)));
                }
            }
            _ => {}
        }
    }
    out
}

fn child_path(path: &str, segment: &str) -> String {
    format!("{path}{segment}")
}

/// One rule a spec breaks: the field (`spec.postgres.grants[0].schema`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, with list indexes and map keys.
    pub field: String,
    /// What is wrong and what the field must be.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The full (strict) spec schema of every kind, from the API types.
static STRICT: LazyLock<HashMap<String, Value>> = LazyLock::new(|| {
    crate::crdgen::strict()
        .into_iter()
        .filter_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            let crd = serde_json::to_value(&crd).ok()?;
            let spec =
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                    .clone();
            Some((kind, spec))
        })
        .collect()
});

/// Every pattern of the strict schemas, compiled once. The patterns are the API's own
/// constants; one that does not compile is a bug the unit tests catch.
static PATTERNS: LazyLock<HashMap<String, regex::Regex>> = LazyLock::new(|| {
    fn collect(schema: &Value, out: &mut HashMap<String, regex::Regex>) {
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && !out.contains_key(p)
            && let Ok(re) = regex::Regex::new(p)
        {
            out.insert(p.to_owned(), re);
        }
        match schema {
            Value::Object(o) => o.values().for_each(|v| collect(v, out)),
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    STRICT.values().for_each(|s| collect(s, &mut out));
    out
});

/// The rules of dbprov's full schema that `spec` (of kind `kind`) breaks, in field order.
/// Empty for a spec dbprov can serve as far as its shape goes (and for unknown kinds).
pub fn violations(kind: &str, spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(schema) = STRICT.get(kind) {
        check(schema, spec, "spec", &mut out);
    }
    out
}

/// The status message for `violations` (non-empty): the first few, and how many more.
pub fn message(violations: &[Violation]) -> String {
    const SHOWN: usize = 3;
    let mut msg = violations
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > SHOWN {
        msg.push_str(&format!(" (and {} more)", violations.len() - SHOWN));
    }
    msg.push_str(". Nothing was sent to the server; fix the field and apply again");
    msg
}

fn check(schema: &Value, value: &Value, field: &str, out: &mut Vec<Violation>) {
    for sub in ["allOf"] {
        for s in schema
            .get(sub)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check(s, value, field, out);
        }
    }
    let mut problem = |problem: String| {
        out.push(Violation {
            field: field.to_owned(),
            problem,
        })
    };
    match value {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            let pattern = schema.get("pattern").and_then(Value::as_str);
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                problem(format!(
                    "{} is {chars} characters long; at most {max}{}",
                    shown(s),
                    pattern
                        .and_then(explain)
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            } else if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                problem(if s.is_empty() {
                    format!("must not be empty (at least {min} characters)")
                } else {
                    format!("{} is shorter than {min} characters", shown(s))
                });
            } else if let Some(p) = pattern
                && let Some(re) = PATTERNS.get(p)
                && !re.is_match(s)
            {
                problem(match explain(p) {
                    Some(e) => format!("{} is not {e}", shown(s)),
                    None => format!("{} does not match the pattern {p}", shown(s)),
                });
            }
        }
        Value::Number(n) => {
            if let (Some(v), Some(max)) =
                (n.as_f64(), schema.get("maximum").and_then(Value::as_f64))
                && v > max
            {
                problem(format!("{n} is above the maximum {max}"));
            }
            if let (Some(v), Some(min)) =
                (n.as_f64(), schema.get("minimum").and_then(Value::as_f64))
                && v < min
            {
                problem(format!("{n} is below the minimum {min}"));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                problem(format!("has {len} entries; at most {max}"));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                problem(format!("has {len} entries; at least {min}"));
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item, v, &format!("{field}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            for (key, v) in map {
                if let Some(s) = props.and_then(|p| p.get(key)) {
                    check(s, v, &format!("{field}.{key}"), out);
                } else if let Some(s) = extra {
                    check(s, v, &format!("{field}[{key}]"), out);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// A value as shown in a message: quoted, escaped, cut at 64 characters. Spec values are
/// not secret (secrets are only ever named in a spec).
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    } else {
        format!("{s:?}")
    }
}

/// What a pattern asks for, in words, for the patterns the API uses.
fn explain(pattern: &str) -> Option<&'static str> {
    Some(match pattern {
        common::IDENTIFIER => {
            "an SQL identifier dbprov serves: letters, digits and _, not starting with a digit"
        }
        common::IDENTIFIER_OR_STAR => {
            "an SQL identifier dbprov serves (letters, digits and _, not starting with a digit) or *"
        }
        common::FUNCTION_SIGNATURE => {
            "a function name with optional argument types, such as calc(integer, text), or *"
        }
        common::PRIVILEGE => "a privilege keyword in capitals, such as SELECT or ALL PRIVILEGES",
        common::EXTENSION_NAME => "an extension name: letters, digits, _ and -",
        common::VERSION => "a version: letters, digits, _, . and -",
        common::LOCALE => "a locale name such as en_US.UTF-8 or C",
        common::CHARSET => {
            "a character set or encoding name: letters, digits and _ (UTF8, utf8mb4)"
        }
        common::MYSQL_HOST => "a MySQL host pattern: letters, digits, ., %, :, _ and -",
        common::K8S_NAME => {
            "a Kubernetes object name: lower-case letters, digits, - and ., starting and ending with a letter or digit"
        }
        common::K8S_NAMESPACE => {
            "a Kubernetes namespace name: lower-case letters, digits and -, starting and ending with a letter or digit"
        }
        common::DATA_KEY => "a Secret or ConfigMap key: letters, digits, -, _ and .",
        common::DURATION => "a duration such as 30s, 5m or 1h30m",
        common::CRON => "a cron schedule of five fields (0 2 * * *) or a macro (@daily, @every 1h)",
        common::TIMESTAMP_OR_INFINITY => "an RFC 3339 timestamp (2030-01-01T00:00:00Z) or infinity",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_pattern_of_the_api_compiles() {
        fn count(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                out.insert(p.to_owned());
            }
            match schema {
                Value::Object(o) => o.values().for_each(|v| count(v, out)),
                Value::Array(a) => a.iter().for_each(|v| count(v, out)),
                _ => {}
            }
        }
        let mut all = std::collections::BTreeSet::new();
        STRICT.values().for_each(|s| count(s, &mut all));
        let broken: Vec<_> = all.iter().filter(|p| !PATTERNS.contains_key(*p)).collect();
        assert!(broken.is_empty(), "{broken:?}");
        assert!(all.len() > 20, "{all:?}");
    }

    #[test]
    fn the_served_crds_of_reference_kinds_keep_only_admission_constraints() {
        for crd in crate::crdgen::all() {
            let kind = crd.spec.names.kind.clone();
            let crd = serde_json::to_value(&crd).unwrap();
            let spec =
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let mut kept = Vec::new();
            walk_constraints(spec, "spec", &mut kept);
            if REFERENCE_KINDS.contains(&kind.as_str()) {
                for (path, keyword) in &kept {
                    assert!(
                        ADMISSION.contains(&(kind.as_str(), path.as_str(), keyword.as_str())),
                        "{kind} {path} {keyword} is not an admission constraint"
                    );
                }
            } else {
                assert!(!kept.is_empty(), "{kind}: dbprov's own kinds stay strict");
            }
        }
        // Every ADMISSION row names a constraint the types still have.
        for (kind, path, keyword) in ADMISSION {
            let spec = &STRICT[*kind];
            let mut all = Vec::new();
            walk_constraints(spec, "spec", &mut all);
            assert!(
                all.iter().any(|(p, k)| p == path && k == keyword),
                "stale ADMISSION row {kind} {path} {keyword}"
            );
        }
    }

    fn walk_constraints(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
        let mut schema = schema.clone();
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        for k in KEYWORDS {
            if obj.contains_key(k) {
                out.push((path.to_owned(), k.to_owned()));
            }
        }
        for (seg, child) in children_mut(obj) {
            walk_constraints(child, &child_path(path, &seg), out);
        }
    }

    #[test]
    fn a_spec_the_go_operator_accepts_is_told_what_dbprov_needs() {
        let spec = json!({
            "userRef": {"name": "App_User"},
            "databaseRef": {"name": "orders"},
            "postgres": {"grants": [{
                "database": "orders",
                "schema": "my-schema",
                "tables": ["orders; DROP TABLE users", "ok_table"],
                "privileges": ["SELECT"]
            }]},
            "driftPolicy": {"interval": "soon"}
        });
        let v = violations("DatabaseGrant", &spec);
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "spec.driftPolicy.interval: \"soon\" is not a duration such as 30s, 5m or 1h30m",
                "spec.postgres.grants[0].schema: \"my-schema\" is not an SQL identifier dbprov serves: letters, digits and _, not starting with a digit",
                "spec.postgres.grants[0].tables[0]: \"orders; DROP TABLE users\" is not an SQL identifier dbprov serves (letters, digits and _, not starting with a digit) or *",
                "spec.userRef.name: \"App_User\" is not a Kubernetes object name: lower-case letters, digits, - and ., starting and ending with a letter or digit",
            ]
        );
        let msg = message(&v);
        assert!(msg.contains("(and 1 more)"), "{msg}");
        assert!(msg.ends_with("fix the field and apply again"), "{msg}");
    }

    #[test]
    fn lengths_and_bounds_are_reported_with_the_limit() {
        let long = "a".repeat(70);
        let spec = json!({"instanceRef": {"name": "pg"}, "name": "orders",
                          "postgres": {"schemas": [{"name": long}]}});
        let v = violations("Database", &spec);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "spec.postgres.schemas[0].name");
        assert!(
            v[0].problem.contains("is 70 characters long; at most 63"),
            "{v:?}"
        );
        assert!(v[0].problem.contains('…'), "the value is cut: {v:?}");
    }

    #[test]
    fn a_valid_spec_and_an_unknown_kind_have_no_violations() {
        let spec = json!({"instanceRef": {"name": "pg"}, "name": "orders"});
        assert_eq!(violations("Database", &spec), []);
        assert_eq!(violations("Nothing", &json!({"x": 1})), []);
    }
}
