//! DatabaseMigration spec → APPLY_MIGRATIONS payload, and the checks the hub can make on the
//! spec before anything is sent (each error names the field and the fix).

use dbprov_contract::{
    instance::Instance,
    migration::{
        FlywaySettings, InlineFile, LiquibaseSettings, MigrationAction, MigrationFormat,
        MigrationIntent, MigrationLimits, MigrationSource, ObjectFiles,
    },
};

use crate::api::migration::{DatabaseMigrationSpec, FilesRef, FlywayConfig, LiquibaseConfig};

/// Why the spec cannot run as written; `None` when it can.
pub fn refusal(spec: &DatabaseMigrationSpec) -> Option<String> {
    if spec.flyway.is_some() && spec.liquibase.is_some() {
        return Some(
            "spec.flyway and spec.liquibase are both set: set the one whose conventions the files follow (flyway is the default)".into(),
        );
    }
    let empty = spec.source.config_maps.as_ref().is_none_or(Vec::is_empty)
        && spec.source.secrets.as_ref().is_none_or(Vec::is_empty)
        && spec.source.inline.as_ref().is_none_or(Vec::is_empty);
    if empty {
        return Some(
            "spec.source names no files: list ConfigMaps (source.configMaps), Secrets (source.secrets) or inline files (source.inline)".into(),
        );
    }
    if crate::controller::kit::drift::parse_interval(&spec.interval).is_none() {
        return Some(format!(
            "spec.interval {:?} is not a duration like 5m or 1h (0s: only on changes)",
            spec.interval
        ));
    }
    if let Some(dupe) = duplicate_object(spec.source.config_maps.as_deref()) {
        return Some(format!(
            "spec.source.configMaps lists {dupe:?} twice: list each ConfigMap once (use keys to pick files)"
        ));
    }
    if let Some(dupe) = duplicate_object(spec.source.secrets.as_deref()) {
        return Some(format!(
            "spec.source.secrets lists {dupe:?} twice: list each Secret once (use keys to pick files)"
        ));
    }
    None
}

fn duplicate_object(refs: Option<&[FilesRef]>) -> Option<&str> {
    let refs = refs?;
    refs.iter()
        .enumerate()
        .find(|(i, r)| refs[..*i].iter().any(|o| o.name == r.name))
        .map(|(_, r)| r.name.as_str())
}

/// The action a run performs.
pub fn action(spec: &DatabaseMigrationSpec, repair: bool) -> MigrationAction {
    if repair {
        MigrationAction::Repair
    } else if spec.dry_run {
        MigrationAction::Plan
    } else {
        MigrationAction::Migrate
    }
}

/// The APPLY_MIGRATIONS payload for `spec` against database `database` of `instance`;
/// sources are read by the agent in `namespace`, and nowhere else.
pub fn migration_intent(
    instance: Instance,
    spec: &DatabaseMigrationSpec,
    database: &str,
    namespace: &str,
    run_as: Option<String>,
    action: MigrationAction,
) -> MigrationIntent {
    let mut sources = Vec::new();
    for r in spec.source.config_maps.iter().flatten() {
        sources.push(MigrationSource::ConfigMap(files(r)));
    }
    for r in spec.source.secrets.iter().flatten() {
        sources.push(MigrationSource::Secret(files(r)));
    }
    if let Some(inline) = spec.source.inline.as_ref().filter(|i| !i.is_empty()) {
        sources.push(MigrationSource::Inline(
            inline
                .iter()
                .map(|f| InlineFile {
                    name: f.name.clone(),
                    content: f.sql.clone(),
                })
                .collect(),
        ));
    }
    let (format, flyway, liquibase) = match &spec.liquibase {
        None => (
            MigrationFormat::Flyway,
            Some(flyway(spec.flyway.as_ref())),
            None,
        ),
        Some(l) => (MigrationFormat::Liquibase, None, Some(liquibase(Some(l)))),
    };
    MigrationIntent {
        instance,
        database: database.to_owned(),
        namespace: namespace.to_owned(),
        sources,
        format,
        action,
        flyway,
        liquibase,
        limits: MigrationLimits {
            statement_timeout_seconds: spec.statement_timeout_seconds,
            lock_timeout_seconds: spec.lock_timeout_seconds,
            lock_wait_seconds: Some(spec.lock_wait_seconds),
        },
        run_as,
        installed_by: None,
    }
}

fn files(r: &FilesRef) -> ObjectFiles {
    ObjectFiles {
        name: r.name.clone(),
        keys: r.keys.clone(),
        optional: r.optional,
    }
}

fn flyway(c: Option<&FlywayConfig>) -> FlywaySettings {
    let d = FlywaySettings::default();
    let Some(c) = c else { return d };
    FlywaySettings {
        table: c.table.clone().unwrap_or(d.table),
        schema: c.schema.clone(),
        baseline_on_migrate: c.baseline_on_migrate.unwrap_or(d.baseline_on_migrate),
        baseline_version: c.baseline_version.clone().unwrap_or(d.baseline_version),
        baseline_description: c
            .baseline_description
            .clone()
            .unwrap_or(d.baseline_description),
        out_of_order: c.out_of_order.unwrap_or(d.out_of_order),
        validate_on_migrate: c.validate_on_migrate.unwrap_or(d.validate_on_migrate),
        target: c.target.clone(),
        placeholders: c.placeholders.clone().unwrap_or_default(),
        placeholder_replacement: c
            .placeholder_replacement
            .unwrap_or(d.placeholder_replacement),
    }
}

fn liquibase(c: Option<&LiquibaseConfig>) -> LiquibaseSettings {
    let d = LiquibaseSettings::default();
    let Some(c) = c else { return d };
    LiquibaseSettings {
        changelog_file: c.changelog_file.clone().unwrap_or(d.changelog_file),
        changelog_table: c.changelog_table.clone().unwrap_or(d.changelog_table),
        lock_table: c.lock_table.clone().unwrap_or(d.lock_table),
        schema: c.schema.clone(),
        contexts: c.contexts.clone(),
        labels: c.labels.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::api::DatabaseMigration;

    fn spec(v: serde_json::Value) -> DatabaseMigrationSpec {
        let m: DatabaseMigration = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseMigration",
            "metadata": {"name": "m", "namespace": "team-a"}, "spec": v
        }))
        .unwrap();
        m.spec
    }

    fn instance() -> Instance {
        dbprov_contract::from_json(
            r#"{"engine":"postgres","host":"db","port":5432,"database":"postgres","credentials":{"secretName":"admin"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn sources_keep_their_order_and_flyway_its_defaults() {
        let s = spec(json!({
            "databaseRef": {"name": "orders"},
            "source": {"configMaps": [{"name": "v1"}, {"name": "v2", "keys": ["V2__b.sql"]}],
                       "secrets": [{"name": "grants", "optional": true}],
                       "inline": [{"name": "R__views.sql", "sql": "SELECT 1;"}]},
            "flyway": {"target": "2", "placeholders": {"owner": "app"}},
            "statementTimeoutSeconds": 30
        }));
        assert_eq!(refusal(&s), None);
        let i = migration_intent(
            instance(),
            &s,
            "orders",
            "team-a",
            Some("orders_owner".into()),
            action(&s, false),
        );
        assert_eq!(i.namespace, "team-a");
        assert_eq!(i.action, MigrationAction::Migrate);
        let kinds: Vec<String> = i
            .sources
            .iter()
            .map(|s| match s {
                MigrationSource::ConfigMap(o) => format!("cm:{}", o.name),
                MigrationSource::Secret(o) => format!("secret:{}", o.name),
                MigrationSource::Inline(f) => format!("inline:{}", f.len()),
            })
            .collect();
        assert_eq!(kinds, ["cm:v1", "cm:v2", "secret:grants", "inline:1"]);
        let f = i.flyway.unwrap();
        assert_eq!(f.table, "flyway_schema_history");
        assert_eq!(f.target.as_deref(), Some("2"));
        assert_eq!(f.placeholders["owner"], "app");
        assert!(f.validate_on_migrate);
        assert_eq!(i.limits.statement_timeout_seconds, Some(30));
        assert_eq!(i.limits.lock_wait_seconds, Some(60));
        assert!(i.liquibase.is_none());
    }

    #[test]
    fn dry_run_plans_and_repair_wins() {
        let s = spec(json!({"databaseRef": {"name": "d"}, "dryRun": true,
                            "source": {"inline": [{"name": "V1__a.sql", "sql": "SELECT 1;"}]}}));
        assert_eq!(action(&s, false), MigrationAction::Plan);
        assert_eq!(action(&s, true), MigrationAction::Repair);
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field_and_the_fix() {
        let cases = [
            (
                json!({"databaseRef": {"name": "d"}, "flyway": {},
                       "liquibase": {"changelogFile": "c.sql"},
                       "source": {"inline": [{"name": "V1__a.sql", "sql": "x"}]}}),
                "spec.flyway and spec.liquibase are both set",
            ),
            (
                json!({"databaseRef": {"name": "d"}, "source": {"configMaps": []}}),
                "spec.source names no files",
            ),
            (
                json!({"databaseRef": {"name": "d"}, "interval": "soon",
                       "source": {"inline": [{"name": "V1__a.sql", "sql": "x"}]}}),
                "spec.interval \"soon\"",
            ),
            (
                json!({"databaseRef": {"name": "d"},
                       "source": {"configMaps": [{"name": "a"}, {"name": "a"}]}}),
                "lists \"a\" twice",
            ),
        ];
        for (v, expected) in cases {
            let m = refusal(&spec(v)).unwrap();
            assert!(m.contains(expected), "{m}");
        }
    }

    #[test]
    fn liquibase_settings_default_to_liquibases_own() {
        let s = spec(json!({"databaseRef": {"name": "d"},
                            "liquibase": {"changelogFile": "db.changelog.sql", "contexts": "prod"},
                            "source": {"configMaps": [{"name": "c"}]}}));
        let i = migration_intent(instance(), &s, "d", "n", None, MigrationAction::Migrate);
        let l = i.liquibase.unwrap();
        assert_eq!(l.changelog_file, "db.changelog.sql");
        assert_eq!(l.changelog_table, "DATABASECHANGELOG");
        assert_eq!(l.contexts.as_deref(), Some("prod"));
        assert!(i.flyway.is_none());
        assert_eq!(i.format, MigrationFormat::Liquibase);
    }
}
