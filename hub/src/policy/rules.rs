//! The built-in rules of a DatabasePolicy. Each [`Rule`] checks a resource given as JSON
//! (webhook, reconcile) and, where CEL can say the same, gives the expression the
//! ValidatingAdmissionPolicy carries — one definition, two enforcement points, tested against
//! each other (policy/tests.rs).

use regex::Regex;
use serde_json::Value;

use crate::api::policy::{DatabasePolicySpec, NameRule, RequiredMetadata};

use super::{CompileError, Subject};

/// Kinds with `spec.deletionProtection`.
const PROTECTABLE: &[&str] = &[
    "Database",
    "DatabaseGrant",
    "ClusterDatabaseGrant",
    "DatabaseInstance",
    "ClusterDatabaseInstance",
    "DatabaseBackupSchedule",
];
/// Kinds with `spec.postgres` role attributes.
const ROLE_KINDS: &[&str] = &["DatabaseUser", "DatabaseRole", "ClusterDatabaseRole"];
/// Instance kinds.
const INSTANCE_KINDS: &[&str] = &["DatabaseInstance", "ClusterDatabaseInstance"];
/// PostgreSQL role attributes `forbidSuperuser` refuses.
const PG_POWERS: &[&str] = &["superuser", "createRole", "replication", "bypassRLS"];

/// One rule of a policy.
#[derive(Debug)]
pub struct Rule {
    /// Path in the policy spec, e.g. `naming.database`.
    pub id: String,
    /// Kinds it looks at (None: every kind).
    kinds: Option<&'static [&'static str]>,
    check: Check,
}

#[derive(Debug)]
enum Check {
    Name {
        path: &'static [&'static str],
        pattern: Option<(Regex, String)>,
        prefix: Option<String>,
        message: Option<String>,
    },
    Metadata {
        map: &'static str,
        key: String,
        pattern: Option<(Regex, String)>,
    },
    DeletionProtection,
    DeletionPolicies(Vec<String>),
    PasswordLength(i64),
    PasswordSpecial,
    PasswordRotation,
    PasswordMaxAge {
        seconds: f64,
        text: String,
    },
    NoExistingPassword,
    NoPgPowers,
    NoMysqlPowers,
    NoAllOnAll,
    AllowedPrivileges {
        object_type: &'static str,
        allowed: Vec<String>,
    },
    Encryption,
    StorageTypes(Vec<String>),
    MinRetention {
        field: &'static str,
        min: i64,
    },
    Instances(Vec<String>),
    Clusters(Vec<String>),
}

/// The CEL of a rule: the expression that must hold, and the message when it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelCheck {
    /// Holds for a compliant object.
    pub expression: String,
    /// The refusal message.
    pub message: String,
}

/// A naming rule's key, the rule, the kinds it applies to and the path of the name.
type NamedRule<'a> = (
    &'a str,
    &'a Option<NameRule>,
    Option<&'static [&'static str]>,
    &'static [&'static str],
);

/// Builds the rule list of `spec`; unusable parts are added to `errors`.
pub fn compile(spec: &DatabasePolicySpec, errors: &mut Vec<CompileError>) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut push = |id: &str, kinds: Option<&'static [&'static str]>, check: Check| {
        rules.push(Rule {
            id: id.to_owned(),
            kinds,
            check,
        });
    };
    if let Some(n) = &spec.naming {
        let names: [NamedRule<'_>; 4] = [
            (
                "database",
                &n.database,
                Some(&["Database"]),
                &["spec", "name"],
            ),
            (
                "user",
                &n.user,
                Some(&["DatabaseUser"]),
                &["spec", "username"],
            ),
            (
                "role",
                &n.role,
                Some(&["DatabaseRole", "ClusterDatabaseRole"]),
                &["spec", "roleName"],
            ),
            ("resource", &n.resource, None, &["metadata", "name"]),
        ];
        for (key, rule, kinds, path) in names {
            let Some(rule) = rule else { continue };
            let id = format!("naming.{key}");
            if rule.pattern.is_none() && rule.prefix.is_none() {
                errors.push(CompileError {
                    field: id.clone(),
                    problem: "give a pattern, a prefix or both".into(),
                });
                continue;
            }
            let pattern = rule
                .pattern
                .as_ref()
                .and_then(|p| regex(p, &format!("{id}.pattern"), false, errors));
            if rule.pattern.is_some() && pattern.is_none() {
                continue;
            }
            push(
                &id,
                kinds,
                Check::Name {
                    path,
                    pattern,
                    prefix: rule.prefix.clone(),
                    message: rule.message.clone(),
                },
            );
        }
    }
    for (map, list) in [
        ("labels", &spec.required_labels),
        ("annotations", &spec.required_annotations),
    ] {
        let field = if map == "labels" {
            "requiredLabels"
        } else {
            "requiredAnnotations"
        };
        for (i, RequiredMetadata { key, value_pattern }) in list.iter().flatten().enumerate() {
            let pattern = match value_pattern {
                Some(p) => match regex(p, &format!("{field}[{i}].valuePattern"), false, errors) {
                    Some(r) => Some(r),
                    None => continue,
                },
                None => None,
            };
            push(
                &format!("{field}[{key}]"),
                None,
                Check::Metadata {
                    map,
                    key: key.clone(),
                    pattern,
                },
            );
        }
    }
    if let Some(d) = &spec.deletion {
        if d.require_deletion_protection == Some(true) {
            push(
                "deletion.requireDeletionProtection",
                Some(PROTECTABLE),
                Check::DeletionProtection,
            );
        }
        if let Some(allowed) = &d.allowed_deletion_policies {
            let names = allowed
                .iter()
                .map(|p| {
                    serde_json::to_value(p)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            push(
                "deletion.allowedDeletionPolicies",
                Some(&["Database"]),
                Check::DeletionPolicies(names),
            );
        }
    }
    if let Some(p) = &spec.password_policy {
        let user: Option<&'static [&'static str]> = Some(&["DatabaseUser"]);
        if let Some(n) = p.min_length {
            push(
                "passwordPolicy.minLength",
                user,
                Check::PasswordLength(i64::from(n)),
            );
        }
        if p.require_special_chars == Some(true) {
            push(
                "passwordPolicy.requireSpecialChars",
                user,
                Check::PasswordSpecial,
            );
        }
        if p.require_rotation == Some(true) {
            push(
                "passwordPolicy.requireRotation",
                user,
                Check::PasswordRotation,
            );
        }
        if let Some(age) = &p.max_rotation_age {
            match crate::duration::parse_duration(age) {
                Some(d) => push(
                    "passwordPolicy.maxRotationAge",
                    user,
                    Check::PasswordMaxAge {
                        seconds: d.as_secs_f64(),
                        text: age.clone(),
                    },
                ),
                None => errors.push(CompileError {
                    field: "passwordPolicy.maxRotationAge".into(),
                    problem: format!("{age:?} is not a duration such as 90d or 2160h"),
                }),
            }
        }
        if p.forbid_existing_passwords == Some(true) {
            push(
                "passwordPolicy.forbidExistingPasswords",
                user,
                Check::NoExistingPassword,
            );
        }
        for (i, pattern) in p.forbidden_patterns.iter().flatten().enumerate() {
            // Checked by the agent on the password itself; compiled here so a bad pattern
            // makes the policy Invalid instead of failing every user.
            let _ = regex(
                pattern,
                &format!("passwordPolicy.forbiddenPatterns[{i}]"),
                true,
                errors,
            );
        }
    }
    if let Some(p) = &spec.privileges {
        if p.forbid_superuser == Some(true) {
            push(
                "privileges.forbidSuperuser",
                Some(ROLE_KINDS),
                Check::NoPgPowers,
            );
            push("privileges.forbidSuperuser", None, Check::NoMysqlPowers);
        }
        if p.forbid_all_on_all == Some(true) {
            push("privileges.forbidAllOnAll", None, Check::NoAllOnAll);
        }
        if let Some(a) = &p.allowed {
            for (object_type, list) in [
                ("database", &a.database),
                ("schema", &a.schema),
                ("table", &a.table),
                ("sequence", &a.sequence),
                ("function", &a.function),
                ("global", &a.global),
                ("mysqlDatabase", &a.mysql_database),
            ] {
                let Some(list) = list else { continue };
                push(
                    &format!("privileges.allowed.{object_type}"),
                    None,
                    Check::AllowedPrivileges {
                        object_type,
                        allowed: list.iter().map(|p| normalize(p)).collect(),
                    },
                );
            }
        }
    }
    if let Some(b) = &spec.backup {
        let backups: Option<&'static [&'static str]> =
            Some(&["DatabaseBackup", "DatabaseBackupSchedule"]);
        if b.require_encryption == Some(true) {
            push("backup.requireEncryption", backups, Check::Encryption);
        }
        if let Some(types) = &b.allowed_storage_types {
            let names = types
                .iter()
                .map(|t| {
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            push(
                "backup.allowedStorageTypes",
                backups,
                Check::StorageTypes(names),
            );
        }
        if let Some(r) = &b.min_retention {
            for (field, min) in [
                ("keepLast", r.keep_last),
                ("keepDaily", r.keep_daily),
                ("keepWeekly", r.keep_weekly),
                ("keepMonthly", r.keep_monthly),
            ] {
                let Some(min) = min else { continue };
                push(
                    &format!("backup.minRetention.{field}"),
                    Some(&["DatabaseBackupSchedule"]),
                    Check::MinRetention {
                        field,
                        min: i64::from(min),
                    },
                );
            }
        }
    }
    if let Some(a) = &spec.access {
        if let Some(i) = &a.allowed_instances {
            push("access.allowedInstances", None, Check::Instances(i.clone()));
        }
        if let Some(c) = &a.allowed_clusters {
            push("access.allowedClusters", None, Check::Clusters(c.clone()));
        }
    }
    rules
}

fn regex(
    pattern: &str,
    field: &str,
    case_insensitive: bool,
    errors: &mut Vec<CompileError>,
) -> Option<(Regex, String)> {
    let built = regex::RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(1 << 20)
        .build();
    match built {
        Ok(r) => Some((r, pattern.to_owned())),
        Err(e) => {
            errors.push(CompileError {
                field: field.to_owned(),
                problem: format!(
                    "{pattern:?} is not an RE2 regular expression ({}); look-around and back-references are not RE2",
                    first_line(&e.to_string())
                ),
            });
            None
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

/// `ALL PRIVILEGES` is `ALL`; privileges compare upper case.
fn normalize(p: &str) -> String {
    let p = p.trim().to_ascii_uppercase();
    if p == "ALL PRIVILEGES" {
        "ALL".into()
    } else {
        p
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The backup spec of a DatabaseBackup or of a schedule's template.
fn backup_spec<'a>(subject: &'a Subject<'_>) -> &'a Value {
    if subject.kind == "DatabaseBackupSchedule" {
        &subject.spec()["template"]["spec"]
    } else {
        subject.spec()
    }
}

/// The object types a PostgreSQL grant applies to.
fn pg_types(g: &Value) -> Vec<&'static str> {
    let listed = |k: &str| g[k].as_array().is_some_and(|a| !a.is_empty());
    let mut t = Vec::new();
    if listed("tables") {
        t.push("table");
    }
    if listed("sequences") {
        t.push("sequence");
    }
    if listed("functions") {
        t.push("function");
    }
    if t.is_empty() {
        t.push(if g["schema"].is_string() {
            "schema"
        } else {
            "database"
        });
    }
    t
}

/// The object type of a MySQL grant.
fn mysql_type(g: &Value) -> &'static str {
    match g["level"].as_str().unwrap_or_default() {
        "global" => "global",
        "database" => "mysqlDatabase",
        "procedure" | "function" => "function",
        _ => "table",
    }
}

fn is_all(p: &str) -> bool {
    normalize(p) == "ALL"
}

/// CEL string literal (JSON string escapes are CEL's).
pub fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn lits(list: &[String]) -> String {
    format!(
        "[{}]",
        list.iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
    )
}

/// CEL reading a path of optional fields: `has(a.b) && has(a.b.c)` chain guard.
fn has_path(root: &str, path: &[&str]) -> String {
    let mut parts = Vec::new();
    let mut cur = root.to_owned();
    for p in path {
        parts.push(format!("has({cur}.{p})"));
        cur = format!("{cur}.{p}");
    }
    parts.join(" && ")
}

fn dotted(root: &str, path: &[&str]) -> String {
    std::iter::once(root)
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join(".")
}

/// CEL: the privilege `p`, normalised.
const CEL_NORM: &str = "(p.upperAscii() == \"ALL PRIVILEGES\" ? \"ALL\" : p.upperAscii())";
/// CEL: grant `g`'s privileges include ALL.
const CEL_HAS_ALL: &str = "g.privileges.exists(p, p.upperAscii() in [\"ALL\", \"ALL PRIVILEGES\"])";

impl Rule {
    /// Whether the rule looks at resources of `kind`.
    pub fn applies_to(&self, kind: &str) -> bool {
        self.kinds.is_none_or(|k| k.contains(&kind))
    }

    /// Whether the apiserver checks this rule for `kind` itself (its CEL exists there): the
    /// webhook leaves those out.
    pub fn cel_covers(&self, kind: &str) -> bool {
        match &self.check {
            Check::PasswordMaxAge { .. } => false,
            Check::Clusters(_) => INSTANCE_KINDS.contains(&kind),
            _ => true,
        }
    }

    /// The message when the rule is broken by `subject`, or None.
    pub fn check(&self, subject: &Subject<'_>) -> Option<String> {
        if !self.applies_to(subject.kind) {
            return None;
        }
        let spec = subject.spec();
        match &self.check {
            Check::Name {
                path,
                pattern,
                prefix,
                message,
            } => {
                let name = get(subject.object, path).as_str()?;
                let field = path.join(".");
                let mut broken = Vec::new();
                if let Some((re, raw)) = pattern
                    && !re.is_match(name)
                {
                    broken.push(format!("must match {raw}"));
                }
                if let Some(prefix) = prefix
                    && let Some(want) = expand_prefix(prefix, subject.namespace())
                    && !name.starts_with(&want)
                {
                    broken.push(format!("must start with {want:?}"));
                }
                if broken.is_empty() {
                    return None;
                }
                Some(match message {
                    Some(m) => format!("{field} {name:?}: {m}"),
                    None => format!("{field} {name:?} {}", broken.join(" and ")),
                })
            }
            Check::Metadata { map, key, pattern } => {
                let kind = if *map == "labels" {
                    "label"
                } else {
                    "annotation"
                };
                match subject.object["metadata"][*map][key].as_str() {
                    None | Some("") => Some(format!(
                        "the {kind} {key} is required; add metadata.{map}.{key}"
                    )),
                    Some(v) => match pattern {
                        Some((re, raw)) if !re.is_match(v) => {
                            Some(format!("the {kind} {key} must match {raw}, not {v:?}"))
                        }
                        _ => None,
                    },
                }
            }
            Check::DeletionProtection => (spec["deletionProtection"] != Value::Bool(true))
                .then(|| "spec.deletionProtection must be true".to_owned()),
            Check::DeletionPolicies(allowed) => {
                let p = spec["deletionPolicy"].as_str().unwrap_or("Retain");
                (!allowed.iter().any(|a| a == p)).then(|| {
                    format!(
                        "spec.deletionPolicy {p} is not allowed; use {}",
                        allowed.join(" or ")
                    )
                })
            }
            Check::PasswordLength(min) => {
                if spec["existingPasswordSecret"].is_object() {
                    return None;
                }
                let len = spec["passwordSecret"]["length"].as_i64()?;
                (len < *min).then(|| {
                    format!("spec.passwordSecret.length {len} is below the minimum {min}; set it to {min} or more")
                })
            }
            Check::PasswordSpecial => {
                if spec["existingPasswordSecret"].is_object() || !spec["passwordSecret"].is_object()
                {
                    return None;
                }
                (spec["passwordSecret"]["includeSpecialChars"] == Value::Bool(false))
                    .then(|| "spec.passwordSecret.includeSpecialChars must be true".to_owned())
            }
            Check::PasswordRotation => (spec["passwordRotation"]["enabled"] != Value::Bool(true))
                .then(|| "spec.passwordRotation.enabled must be true".to_owned()),
            Check::PasswordMaxAge { seconds, text } => {
                let age = spec["passwordRotation"]["maxAge"].as_str()?;
                let d = crate::duration::parse_duration(age)?;
                (d.as_secs_f64() > *seconds).then(|| {
                    format!("spec.passwordRotation.maxAge {age} is longer than the allowed {text}")
                })
            }
            Check::NoExistingPassword => spec["existingPasswordSecret"].is_object().then(|| {
                "spec.existingPasswordSecret is not allowed: let dbprov generate the password"
                    .to_owned()
            }),
            Check::NoPgPowers => {
                let found: Vec<&str> = PG_POWERS
                    .iter()
                    .copied()
                    .filter(|a| spec["postgres"][*a] == Value::Bool(true))
                    .collect();
                (!found.is_empty()).then(|| {
                    format!(
                        "spec.postgres.{} must not be true",
                        found.join(", spec.postgres.")
                    )
                })
            }
            Check::NoMysqlPowers => {
                let grants = spec["mysql"]["grants"].as_array()?;
                grants.iter().enumerate().find_map(|(i, g)| {
                    let super_ = strings(&g["privileges"])
                        .iter()
                        .any(|p| normalize(p) == "SUPER");
                    let global_option =
                        g["level"] == "global" && g["withGrantOption"] == Value::Bool(true);
                    (super_ || global_option).then(|| {
                        format!("spec.mysql.grants[{i}]: SUPER and global WITH GRANT OPTION are not allowed")
                    })
                })
            }
            Check::NoAllOnAll => {
                for (i, g) in spec["mysql"]["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    if g["level"] == "global" && strings(&g["privileges"]).iter().any(|p| is_all(p))
                    {
                        return Some(format!(
                            "spec.mysql.grants[{i}]: ALL on *.* is not allowed; grant the privileges needed on one database"
                        ));
                    }
                }
                for (i, g) in spec["postgres"]["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let star = ["tables", "sequences", "functions"]
                        .iter()
                        .any(|k| strings(&g[*k]).contains(&"*"));
                    if star && strings(&g["privileges"]).iter().any(|p| is_all(p)) {
                        return Some(format!(
                            "spec.postgres.grants[{i}]: ALL on every object of a schema (`*`) is not allowed; name the privileges or the objects"
                        ));
                    }
                }
                None
            }
            Check::AllowedPrivileges {
                object_type,
                allowed,
            } => {
                let check = |engine: &str, i: usize, g: &Value| {
                    let bad: Vec<String> = strings(&g["privileges"])
                        .iter()
                        .map(|p| normalize(p))
                        .filter(|p| !allowed.contains(p))
                        .collect();
                    (!bad.is_empty()).then(|| {
                        format!(
                            "spec.{engine}.grants[{i}]: {} not allowed on {object_type} objects (allowed: {})",
                            bad.join(", "),
                            allowed.join(", ")
                        )
                    })
                };
                let pg = spec["postgres"]["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter(|(_, g)| pg_types(g).contains(object_type))
                    .find_map(|(i, g)| check("postgres", i, g));
                pg.or_else(|| {
                    spec["mysql"]["grants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter(|(_, g)| mysql_type(g) == *object_type)
                        .find_map(|(i, g)| check("mysql", i, g))
                })
            }
            Check::Encryption => {
                let b = backup_spec(subject);
                (b["encryption"]["enabled"] != Value::Bool(true)).then(|| {
                    "encryption.enabled must be true (with encryption.secretRef naming the key)"
                        .to_owned()
                })
            }
            Check::StorageTypes(allowed) => {
                let t = backup_spec(subject)["storage"]["type"].as_str()?;
                (!allowed.iter().any(|a| a == t)).then(|| {
                    format!(
                        "storage.type {t} is not allowed; use {}",
                        allowed.join(" or ")
                    )
                })
            }
            Check::MinRetention { field, min } => match spec["retention"][*field].as_i64() {
                Some(n) if n >= *min => None,
                Some(n) => Some(format!(
                    "spec.retention.{field} {n} is below the minimum {min}"
                )),
                None => Some(format!(
                    "spec.retention.{field} must be set to {min} or more"
                )),
            },
            Check::Instances(allowed) => {
                let refs = [
                    &spec["instanceRef"]["name"],
                    &spec["clusterInstanceRef"]["name"],
                    &spec["target"]["instanceRef"]["name"],
                    &spec["target"]["clusterInstanceRef"]["name"],
                ];
                refs.iter().filter_map(|v| v.as_str()).find_map(|name| {
                    (!allowed.iter().any(|a| a == name)).then(|| {
                        format!(
                            "instance {name} is not allowed; use {}",
                            allowed.join(" or ")
                        )
                    })
                })
            }
            Check::Clusters(allowed) => {
                let cluster = if INSTANCE_KINDS.contains(&subject.kind) {
                    spec["clusterRef"]["name"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| subject.instance.map(|i| i.cluster.clone()))
                } else {
                    subject.instance.map(|i| i.cluster.clone())
                }?;
                (!allowed.contains(&cluster)).then(|| {
                    format!(
                        "ManagedCluster {cluster} is not allowed; use an instance on {}",
                        allowed.join(" or ")
                    )
                })
            }
        }
    }

    /// The rule in CEL over `object`, for the ValidatingAdmissionPolicy (None: the webhook and
    /// the reconcile check enforce it). `default_cluster` is the hub's cluster for instances
    /// without `spec.clusterRef`.
    pub fn cel(&self, default_cluster: &str) -> Option<CelCheck> {
        let (body, message) = match &self.check {
            Check::Name {
                path,
                pattern,
                prefix,
                message,
            } => {
                let field = dotted("object", path);
                let mut conds = Vec::new();
                let mut said = Vec::new();
                if let Some((_, raw)) = pattern {
                    conds.push(format!("{field}.matches({})", lit(raw)));
                    said.push(format!("match {raw}"));
                }
                if let Some(prefix) = prefix {
                    let parts: Vec<String> = prefix.split("{namespace}").map(lit).collect();
                    let ns = "object.metadata.namespace.replace(\"-\", \"_\")";
                    let want = parts.join(&format!(" + {ns} + "));
                    if prefix.contains("{namespace}") {
                        conds.push(format!(
                            "(!has(object.metadata.namespace) || {field}.startsWith({want}))"
                        ));
                    } else {
                        conds.push(format!("{field}.startsWith({want})"));
                    }
                    said.push(format!("start with {prefix}"));
                }
                let guard = has_path("object", path);
                (
                    format!("!({guard}) || ({})", conds.join(" && ")),
                    message.clone().unwrap_or_else(|| {
                        format!("{} must {}", path.join("."), said.join(" and "))
                    }),
                )
            }
            Check::Metadata { map, key, pattern } => {
                let m = format!("object.metadata.{map}");
                let v = format!("{m}[{}]", lit(key));
                let mut e = format!("has({m}) && {} in {m} && {v} != \"\"", lit(key));
                if let Some((_, raw)) = pattern {
                    e.push_str(&format!(" && {v}.matches({})", lit(raw)));
                }
                let what = if *map == "labels" {
                    "label"
                } else {
                    "annotation"
                };
                (
                    e,
                    match pattern {
                        Some((_, raw)) => format!("the {what} {key} is required and must match {raw}"),
                        None => format!("the {what} {key} is required; add metadata.{map}.{key}"),
                    },
                )
            }
            Check::DeletionProtection => (
                "has(object.spec.deletionProtection) && object.spec.deletionProtection == true"
                    .into(),
                "spec.deletionProtection must be true".into(),
            ),
            Check::DeletionPolicies(allowed) => (
                format!(
                    "(has(object.spec.deletionPolicy) ? object.spec.deletionPolicy : \"Retain\") in {}",
                    lits(allowed)
                ),
                format!(
                    "spec.deletionPolicy must be {}",
                    allowed.join(" or ")
                ),
            ),
            Check::PasswordLength(min) => (
                format!(
                    "has(object.spec.existingPasswordSecret) || !has(object.spec.passwordSecret) || !has(object.spec.passwordSecret.length) || object.spec.passwordSecret.length >= {min}"
                ),
                format!("spec.passwordSecret.length must be {min} or more"),
            ),
            Check::PasswordSpecial => (
                "has(object.spec.existingPasswordSecret) || !has(object.spec.passwordSecret) || !has(object.spec.passwordSecret.includeSpecialChars) || object.spec.passwordSecret.includeSpecialChars == true".into(),
                "spec.passwordSecret.includeSpecialChars must be true".into(),
            ),
            Check::PasswordRotation => (
                "has(object.spec.passwordRotation) && has(object.spec.passwordRotation.enabled) && object.spec.passwordRotation.enabled == true".into(),
                "spec.passwordRotation.enabled must be true".into(),
            ),
            Check::PasswordMaxAge { .. } => return None,
            Check::NoExistingPassword => (
                "!has(object.spec.existingPasswordSecret)".into(),
                "spec.existingPasswordSecret is not allowed: let dbprov generate the password"
                    .into(),
            ),
            Check::NoPgPowers => {
                let any = PG_POWERS
                    .iter()
                    .map(|a| {
                        format!("(has(object.spec.postgres.{a}) && object.spec.postgres.{a} == true)")
                    })
                    .collect::<Vec<_>>()
                    .join(" || ");
                (
                    format!("!has(object.spec.postgres) || !({any})"),
                    format!("spec.postgres.{} must not be true", PG_POWERS.join("/")),
                )
            }
            Check::NoMysqlPowers => (
                "!has(object.spec.mysql) || !has(object.spec.mysql.grants) || object.spec.mysql.grants.all(g, !g.privileges.exists(p, p.upperAscii() == \"SUPER\") && !(g.level == \"global\" && has(g.withGrantOption) && g.withGrantOption == true))".into(),
                "MySQL grants: SUPER and global WITH GRANT OPTION are not allowed".into(),
            ),
            Check::NoAllOnAll => (
                format!(
                    "(!has(object.spec.mysql) || !has(object.spec.mysql.grants) || object.spec.mysql.grants.all(g, !(g.level == \"global\" && {CEL_HAS_ALL}))) && (!has(object.spec.postgres) || !has(object.spec.postgres.grants) || object.spec.postgres.grants.all(g, !({CEL_HAS_ALL} && ((has(g.tables) && \"*\" in g.tables) || (has(g.sequences) && \"*\" in g.sequences) || (has(g.functions) && \"*\" in g.functions)))))"
                ),
                "ALL on *.* (MySQL) or on every object of a schema (PostgreSQL `*`) is not allowed"
                    .into(),
            ),
            Check::AllowedPrivileges {
                object_type,
                allowed,
            } => {
                let listed = |k: &str| format!("(has(g.{k}) && size(g.{k}) > 0)");
                let none_listed = format!(
                    "!{} && !{} && !{}",
                    listed("tables"),
                    listed("sequences"),
                    listed("functions")
                );
                let pg_applies = match *object_type {
                    "table" => Some(listed("tables")),
                    "sequence" => Some(listed("sequences")),
                    "function" => Some(listed("functions")),
                    "schema" => Some(format!("has(g.schema) && {none_listed}")),
                    "database" => Some(format!("!has(g.schema) && {none_listed}")),
                    _ => None,
                };
                let my_applies = match *object_type {
                    "global" => Some("g.level == \"global\"".to_owned()),
                    "mysqlDatabase" => Some("g.level == \"database\"".to_owned()),
                    "table" => Some("g.level in [\"table\", \"column\"]".to_owned()),
                    "function" => Some("g.level in [\"procedure\", \"function\"]".to_owned()),
                    _ => None,
                };
                let ok = format!("g.privileges.all(p, {CEL_NORM} in {})", lits(allowed));
                let mut parts = Vec::new();
                if let Some(a) = pg_applies {
                    parts.push(format!("(!has(object.spec.postgres) || !has(object.spec.postgres.grants) || object.spec.postgres.grants.all(g, !({a}) || {ok}))"));
                }
                if let Some(a) = my_applies {
                    parts.push(format!("(!has(object.spec.mysql) || !has(object.spec.mysql.grants) || object.spec.mysql.grants.all(g, !({a}) || {ok}))"));
                }
                (
                    parts.join(" && "),
                    format!(
                        "privileges on {object_type} objects must be among {}",
                        allowed.join(", ")
                    ),
                )
            }
            Check::Encryption => (
                "object.kind == \"DatabaseBackupSchedule\" ? (has(object.spec.template.spec.encryption) && has(object.spec.template.spec.encryption.enabled) && object.spec.template.spec.encryption.enabled == true) : (has(object.spec.encryption) && has(object.spec.encryption.enabled) && object.spec.encryption.enabled == true)".into(),
                "encryption.enabled must be true (with encryption.secretRef naming the key)".into(),
            ),
            Check::StorageTypes(allowed) => (
                format!(
                    "(object.kind == \"DatabaseBackupSchedule\" ? object.spec.template.spec.storage.type : object.spec.storage.type) in {}",
                    lits(allowed)
                ),
                format!("storage.type must be {}", allowed.join(" or ")),
            ),
            Check::MinRetention { field, min } => (
                format!(
                    "has(object.spec.retention) && has(object.spec.retention.{field}) && object.spec.retention.{field} >= {min}"
                ),
                format!("spec.retention.{field} must be set to {min} or more"),
            ),
            Check::Instances(allowed) => {
                let l = lits(allowed);
                (
                    format!(
                        "(!has(object.spec.instanceRef) || object.spec.instanceRef.name in {l}) && (!has(object.spec.clusterInstanceRef) || object.spec.clusterInstanceRef.name in {l}) && (!has(object.spec.target) || ((!has(object.spec.target.instanceRef) || object.spec.target.instanceRef.name in {l}) && (!has(object.spec.target.clusterInstanceRef) || object.spec.target.clusterInstanceRef.name in {l})))"
                    ),
                    format!("only the instances {} may be used", allowed.join(", ")),
                )
            }
            Check::Clusters(allowed) => (
                format!(
                    "(has(object.spec.clusterRef) ? object.spec.clusterRef.name : {}) in {}",
                    lit(default_cluster),
                    lits(allowed)
                ),
                format!(
                    "instances must be served by the ManagedCluster {}",
                    allowed.join(" or ")
                ),
            ),
        };
        let kinds = match &self.check {
            Check::Clusters(_) => Some(INSTANCE_KINDS),
            _ => self.kinds,
        };
        let expression = match kinds {
            Some(k) if k.len() == 1 => format!("object.kind != {} || ({body})", lit(k[0])),
            Some(k) => {
                let k: Vec<String> = k.iter().map(|s| (*s).to_owned()).collect();
                format!("!(object.kind in {}) || ({body})", lits(&k))
            }
            None => body,
        };
        Some(CelCheck {
            expression,
            message,
        })
    }
}

/// The prefix with `{namespace}` replaced (`-` read as `_`); None when it needs a namespace
/// and the resource has none.
fn expand_prefix(prefix: &str, namespace: Option<&str>) -> Option<String> {
    if prefix.contains("{namespace}") {
        let ns = namespace?.replace('-', "_");
        Some(prefix.replace("{namespace}", &ns))
    } else {
        Some(prefix.to_owned())
    }
}
