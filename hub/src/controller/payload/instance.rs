//! PROBE_INSTANCE, and the `instance` block of every other intent: how the agent reaches the
//! server of a DatabaseInstance / ClusterDatabaseInstance.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.clusterRef` (routing),
//! `spec.healthCheck.enabled` and `intervalSeconds` (probe timing), `spec.mysql.parseTime`
//! (a Go driver option with nothing to act on), `spec.clickhouse`, `spec.deletionProtection`,
//! `spec.driftPolicy`, `spec.discovery` (only the `discover` flag the hub decides from it);
//! `spec.tls.enabled` only chooses `sslMode`.

use std::time::Duration;

use dbprov_contract::{
    Engine,
    instance::{CredentialsRef, Instance, ProbeIntent, Session, TlsRef, Tracking},
};

use crate::{
    api::instance::{self as api, DatabaseInstanceSpec, MysqlTlsMode, PostgresSslMode, TlsMode},
    controller::kit::drift::parse_duration,
};

/// The contract's engine for the API's.
pub fn engine(e: api::Engine) -> Engine {
    match e {
        api::Engine::Postgres => Engine::Postgres,
        api::Engine::Mysql => Engine::Mysql,
        api::Engine::Mariadb => Engine::Mariadb,
        api::Engine::Cockroachdb => Engine::Cockroachdb,
        api::Engine::Clickhouse => Engine::Clickhouse,
    }
}

/// The wire spelling of a libpq `sslmode`.
fn postgres_ssl_mode(m: PostgresSslMode) -> &'static str {
    match m {
        PostgresSslMode::Disable => "disable",
        PostgresSslMode::Allow => "allow",
        PostgresSslMode::Prefer => "prefer",
        PostgresSslMode::Require => "require",
        PostgresSslMode::VerifyCa => "verify-ca",
        PostgresSslMode::VerifyFull => "verify-full",
    }
}

/// The wire spelling of a MySQL TLS mode (go-sql-driver names, sent as they are).
fn mysql_tls_mode(m: MysqlTlsMode) -> &'static str {
    match m {
        MysqlTlsMode::Disabled => "disabled",
        MysqlTlsMode::Preferred => "preferred",
        MysqlTlsMode::Required => "required",
        MysqlTlsMode::SkipVerify => "skip-verify",
    }
}

/// The wire spelling of a `tls.mode`.
fn tls_mode(m: TlsMode) -> &'static str {
    match m {
        TlsMode::Disable => "disable",
        TlsMode::Require => "require",
        TlsMode::VerifyCa => "verify-ca",
        TlsMode::VerifyFull => "verify-full",
    }
}

/// `sslMode`: an enabled `tls` block's mode, else the `postgres` block's `sslMode`, else the
/// `mysql` block's `tls`, else `prefer`.
pub fn ssl_mode(spec: &DatabaseInstanceSpec) -> String {
    if let Some(t) = spec.tls.as_ref().filter(|t| t.enabled == Some(true)) {
        return tls_mode(t.mode).to_owned();
    }
    match (&spec.postgres, &spec.mysql) {
        (Some(pg), _) => postgres_ssl_mode(pg.ssl_mode),
        (_, Some(my)) => mysql_tls_mode(my.tls),
        _ => postgres_ssl_mode(PostgresSslMode::default()),
    }
    .to_owned()
}

/// How to reach the instance; `namespace` is the resource's (None for a cluster-scoped
/// instance: Secrets without a namespace are then the agent's).
pub fn instance(spec: &DatabaseInstanceSpec, namespace: Option<&str>) -> Instance {
    let conn = &spec.connection;
    let secret = conn.secret_ref.as_ref().or(conn.existing_secret.as_ref());
    let keys = secret.and_then(|s| s.keys.as_ref());
    let tls = spec
        .tls
        .as_ref()
        .and_then(|t| t.secret_ref.as_ref())
        .map(|r| {
            let keys = r.keys.as_ref();
            TlsRef {
                secret_name: r.name.clone(),
                namespace: namespace.map(str::to_owned),
                ca_key: keys.map_or_else(|| "ca.crt".to_owned(), |k| k.ca.clone()),
                cert_key: keys.and_then(|k| k.cert.clone()),
                key_key: keys.and_then(|k| k.key.clone()),
            }
        });
    Instance {
        engine: engine(spec.engine),
        host: conn.host.clone(),
        // The CRD bounds the port to 1-65535; 0 (unreachable) cannot come from a valid spec.
        port: u16::try_from(conn.port).unwrap_or(0),
        database: conn.database.clone(),
        credentials: CredentialsRef {
            secret_name: secret.map(|s| s.name.clone()).unwrap_or_default(),
            // Namespace sameness: a reference without a namespace means the resource's own
            // (for a cluster-scoped instance: the agent's, which it fills in).
            namespace: secret
                .and_then(|s| s.namespace.clone())
                .or(namespace.map(str::to_owned)),
            username_key: keys.map_or_else(|| "username".to_owned(), |k| k.username.clone()),
            password_key: keys.map_or_else(|| "password".to_owned(), |k| k.password.clone()),
        },
        ssl_mode: Some(ssl_mode(spec)),
        // The CRD requires at least 1; a negative value falls back to the default.
        connect_timeout_seconds: spec
            .postgres
            .as_ref()
            .map_or(10, |p| u64::try_from(p.connect_timeout).unwrap_or(10)),
        tls,
        discover: false,
        session: session(spec),
        probe_timeout_seconds: None,
        tracking: tracking(spec),
        allowed_privileges: spec.allowed_privileges.clone().unwrap_or_default(),
    }
}

/// Milliseconds of a duration string (the CRD's pattern; unparsable: unset, the agent's
/// default).
fn millis(s: &str) -> Option<u64> {
    parse_duration(s).map(|d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The agent's session settings from the `postgres` and `mysql` blocks (each engine applies
/// its own).
pub fn session(spec: &DatabaseInstanceSpec) -> Option<Session> {
    let pg = spec.postgres.as_ref();
    let my = spec.mysql.as_ref();
    if pg.is_none() && my.is_none() {
        return None;
    }
    Some(Session {
        application_name: pg.map(|p| p.application_name.clone()),
        // What the duration parser cannot read (the CRD pattern lets nothing such through)
        // goes as written, for PostgreSQL to refuse by name rather than being dropped here.
        statement_timeout: pg.and_then(|p| {
            p.statement_timeout
                .as_ref()
                .map(|t| millis(t).map_or_else(|| t.clone(), |ms| ms.to_string()))
        }),
        connect_timeout_ms: my.and_then(|m| millis(&m.timeout)),
        charset: my.map(|m| m.charset.clone()),
        collation: my.map(|m| m.collation.clone()),
        read_timeout_ms: my.and_then(|m| millis(&m.read_timeout)),
        write_timeout_ms: my.and_then(|m| millis(&m.write_timeout)),
    })
}

/// `spec.resourceTracking`, when enabled.
pub fn tracking(spec: &DatabaseInstanceSpec) -> Option<Tracking> {
    let t = spec.resource_tracking.as_ref().filter(|t| t.enabled)?;
    let my = t.mysql.as_ref();
    Some(Tracking {
        comment_format: t.comment_format.clone(),
        use_user_attributes: my.is_none_or(|m| m.use_user_attributes),
        metadata_database: my.and_then(|m| m.metadata_database.clone()),
        metadata_table: my.map_or_else(
            || "_dbops_metadata".to_owned(),
            |m| m.metadata_table_name.clone(),
        ),
    })
}

/// The desired state of PROBE_INSTANCE: the instance, listing its objects when `discover`,
/// answering within `spec.healthCheck.timeoutSeconds`.
pub fn probe(spec: &DatabaseInstanceSpec, namespace: Option<&str>, discover: bool) -> ProbeIntent {
    Instance {
        discover,
        probe_timeout_seconds: probe_timeout(spec).map(|t| t.as_secs()),
        ..instance(spec, namespace)
    }
}

/// `spec.healthCheck.timeoutSeconds`, when the block is there.
pub fn probe_timeout(spec: &DatabaseInstanceSpec) -> Option<Duration> {
    spec.health_check
        .as_ref()
        .map(|h| Duration::from_secs(u64::try_from(h.timeout_seconds).unwrap_or(5).max(1)))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::{ClusterDatabaseInstance, DatabaseInstance},
        controller::payload::corpus,
    };

    /// `probe_desired` as the hub had it before the contract (controller/instance.rs).
    pub(crate) fn legacy(
        spec: &DatabaseInstanceSpec,
        namespace: Option<&str>,
    ) -> serde_json::Value {
        let conn = &spec.connection;
        let secret = conn.secret_ref.as_ref().or(conn.existing_secret.as_ref());
        let keys = secret.and_then(|s| s.keys.clone());
        let ssl_mode = match (&spec.postgres, &spec.mysql) {
            (Some(pg), _) => serde_json::to_value(pg.ssl_mode).ok(),
            (_, Some(my)) => serde_json::to_value(my.tls).ok(),
            _ => serde_json::to_value(PostgresSslMode::default()).ok(),
        };
        let tls = spec.tls.as_ref();
        let ssl_mode = match tls {
            Some(t) if t.enabled == Some(true) => serde_json::to_value(t.mode).ok(),
            _ => ssl_mode,
        };
        let tls_ref = tls.and_then(|t| t.secret_ref.as_ref()).map(|r| {
            let keys = r.keys.clone();
            json!({
                "secretName": r.name,
                "namespace": namespace,
                "caKey": keys.as_ref().map_or_else(|| "ca.crt".to_owned(), |k| k.ca.clone()),
                "certKey": keys.as_ref().and_then(|k| k.cert.clone()),
                "keyKey": keys.as_ref().and_then(|k| k.key.clone()),
            })
        });
        let mut v = json!({
            "engine": spec.engine,
            "host": conn.host,
            "port": conn.port,
            "database": conn.database,
            "credentials": {
                "secretName": secret.map(|s| s.name.clone()).unwrap_or_default(),
                "namespace": secret.and_then(|s| s.namespace.clone()).or(namespace.map(str::to_owned)),
                "usernameKey": keys.as_ref().map(|k| k.username.clone()).unwrap_or_else(|| "username".into()),
                "passwordKey": keys.as_ref().map(|k| k.password.clone()).unwrap_or_else(|| "password".into()),
            },
            "sslMode": ssl_mode,
            "tls": tls_ref,
            "connectTimeoutSeconds": spec.postgres.as_ref().map(|p| p.connect_timeout).unwrap_or(10),
        });
        // Added by issue 15, sent only when set (unset members left out).
        for (key, value) in [
            ("session", legacy_session(spec)),
            ("tracking", legacy_tracking(spec)),
        ] {
            if let serde_json::Value::Object(mut members) = value {
                members.retain(|_, v| !v.is_null());
                v[key] = serde_json::Value::Object(members);
            }
        }
        // Added by issue 14, sent only when the instance lists any.
        if let Some(classes) = spec.allowed_privileges.as_ref().filter(|c| !c.is_empty()) {
            v["allowedPrivileges"] = json!(classes);
        }
        v
    }

    /// The session settings as issue 15 added them: both engine blocks' options, durations
    /// in milliseconds.
    fn legacy_session(spec: &DatabaseInstanceSpec) -> serde_json::Value {
        let ms = |d: &str| parse_duration(d).map(|d| d.as_millis() as u64);
        match (&spec.postgres, &spec.mysql) {
            (None, None) => serde_json::Value::Null,
            (pg, my) => json!({
                "applicationName": pg.as_ref().map(|p| &p.application_name),
                "statementTimeout": pg.as_ref().and_then(|p| p.statement_timeout.as_deref()).and_then(ms).map(|ms| ms.to_string()),
                "connectTimeoutMs": my.as_ref().and_then(|m| ms(&m.timeout)),
                "charset": my.as_ref().map(|m| &m.charset),
                "collation": my.as_ref().map(|m| &m.collation),
                "readTimeoutMs": my.as_ref().and_then(|m| ms(&m.read_timeout)),
                "writeTimeoutMs": my.as_ref().and_then(|m| ms(&m.write_timeout)),
            }),
        }
    }

    /// `spec.resourceTracking` as issue 15 added it: only when enabled.
    fn legacy_tracking(spec: &DatabaseInstanceSpec) -> serde_json::Value {
        match spec.resource_tracking.as_ref().filter(|t| t.enabled) {
            None => serde_json::Value::Null,
            Some(t) => json!({
                "commentFormat": t.comment_format,
                "useUserAttributes": t.mysql.as_ref().is_none_or(|m| m.use_user_attributes),
                "metadataDatabase": t.mysql.as_ref().and_then(|m| m.metadata_database.clone()),
                "metadataTable": t.mysql.as_ref().map_or("_dbops_metadata", |m| m.metadata_table_name.as_str()),
            }),
        }
    }

    /// A DatabaseInstance spec from its JSON.
    pub(crate) fn spec(v: serde_json::Value) -> DatabaseInstanceSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_corpus_instance_converts_to_what_the_hub_sent() {
        for (label, i) in corpus::objects::<DatabaseInstance>("DatabaseInstance") {
            let ns = i.metadata.namespace.as_deref();
            let converted = instance(&i.spec, ns);
            assert_eq!(
                converted,
                corpus::as_contract::<Instance>(legacy(&i.spec, ns)),
                "{label}"
            );
            corpus::round_trips(&converted);
        }
        for (label, i) in corpus::objects::<ClusterDatabaseInstance>("ClusterDatabaseInstance") {
            let converted = instance(&i.spec.0, None);
            assert_eq!(
                converted,
                corpus::as_contract::<Instance>(legacy(&i.spec.0, None)),
                "{label}"
            );
            corpus::round_trips(&converted);
        }
    }

    #[test]
    fn a_verify_full_instance_with_mutual_tls_is_sent_as_today() {
        // tests/corpus/valid/dpo/instances.yaml, pg-main.
        let s = spec(json!({
            "engine": "postgres",
            "connection": {"host": "postgres.databases.svc.cluster.local", "port": 5432,
                "database": "postgres",
                "secretRef": {"name": "pg-admin", "keys": {"username": "user", "password": "pass"}}},
            "tls": {"enabled": true, "mode": "verify-full",
                "secretRef": {"name": "pg-tls", "keys": {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}}},
            "postgres": {"sslMode": "verify-full", "connectTimeout": 15,
                "applicationName": "dbprov-tests", "statementTimeout": "30s"},
            "discovery": {"enabled": true, "interval": "1h"}
        }));
        let today = json!({
            "engine": "postgres",
            "host": "postgres.databases.svc.cluster.local",
            "port": 5432,
            "database": "postgres",
            "credentials": {"secretName": "pg-admin", "namespace": "team-a",
                "usernameKey": "user", "passwordKey": "pass"},
            "sslMode": "verify-full",
            "tls": {"secretName": "pg-tls", "namespace": "team-a", "caKey": "ca.crt",
                "certKey": "tls.crt", "keyKey": "tls.key"},
            "connectTimeoutSeconds": 15,
            "session": {"applicationName": "dbprov-tests", "statementTimeout": "30000"},
        });
        assert_eq!(legacy(&s, Some("team-a")), today);
        let converted = instance(&s, Some("team-a"));
        assert_eq!(converted, corpus::as_contract::<Instance>(today.clone()));
        corpus::round_trips(&converted);
        // The probe adds `discover` (set by the hub when discovery is due).
        let mut probed = today;
        probed["discover"] = json!(true);
        assert_eq!(
            probe(&s, Some("team-a"), true),
            corpus::as_contract::<ProbeIntent>(probed)
        );
        assert!(!probe(&s, Some("team-a"), false).discover);
    }

    #[test]
    fn namespace_sameness_of_the_credentials_and_tls_secrets() {
        let s = spec(json!({
            "engine": "mariadb",
            "connection": {"host": "mariadb", "port": 3306, "database": "mysql",
                "existingSecret": {"name": "admin", "namespace": "secrets"}},
            "tls": {"mode": "verify-ca", "secretRef": {"name": "ca"}},
            "mysql": {"tls": "skip-verify"}
        }));
        // An explicit namespace stays; the TLS Secret is always the resource's.
        let namespaced = instance(&s, Some("team-a"));
        assert_eq!(namespaced.credentials.namespace.as_deref(), Some("secrets"));
        assert_eq!(
            namespaced.tls.as_ref().unwrap().namespace.as_deref(),
            Some("team-a")
        );
        // A `tls` block that is not enabled leaves the mode to the engine block.
        assert_eq!(namespaced.ssl_mode.as_deref(), Some("skip-verify"));
        let today = json!({
            "engine": "mariadb", "host": "mariadb", "port": 3306, "database": "mysql",
            "credentials": {"secretName": "admin", "namespace": "secrets",
                "usernameKey": "username", "passwordKey": "password"},
            "sslMode": "skip-verify",
            "tls": {"secretName": "ca", "namespace": null, "caKey": "ca.crt",
                "certKey": null, "keyKey": null},
            "connectTimeoutSeconds": 10,
            // The `mysql` block's defaults (utf8mb4, 10s, 30s, 30s) are the agent's session.
            "session": {"charset": "utf8mb4", "collation": "utf8mb4_unicode_ci",
                "connectTimeoutMs": 10000, "readTimeoutMs": 30000, "writeTimeoutMs": 30000},
        });
        // Cluster-scoped: no namespace at all where the reference has none (the agent's).
        let cluster = instance(&s, None);
        assert_eq!(legacy(&s, None), today);
        assert_eq!(cluster, corpus::as_contract::<Instance>(today));
        assert_eq!(cluster.credentials.namespace.as_deref(), Some("secrets"));
        assert_eq!(cluster.tls.as_ref().unwrap().namespace, None);

        let bare = spec(json!({
            "engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres",
                "secretRef": {"name": "admin"}}
        }));
        assert_eq!(
            instance(&bare, Some("team-a"))
                .credentials
                .namespace
                .as_deref(),
            Some("team-a")
        );
        assert_eq!(instance(&bare, None).credentials.namespace, None);
    }

    #[test]
    fn defaults_without_engine_blocks_or_key_names() {
        let s = spec(json!({
            "engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres",
                "secretRef": {"name": "admin"}}
        }));
        let today = json!({
            "engine": "postgres", "host": "pg", "port": 5432, "database": "postgres",
            "credentials": {"secretName": "admin", "namespace": "n",
                "usernameKey": "username", "passwordKey": "password"},
            "sslMode": "prefer", "tls": null, "connectTimeoutSeconds": 10,
        });
        assert_eq!(legacy(&s, Some("n")), today);
        let converted = instance(&s, Some("n"));
        assert_eq!(converted, corpus::as_contract::<Instance>(today));
        assert_eq!(converted.ssl_mode.as_deref(), Some("prefer"));
        assert_eq!(converted.connect_timeout_seconds, 10);
        assert_eq!(converted.tls, None);
        corpus::round_trips(&converted);
    }

    #[test]
    fn probe_timeout_and_resource_tracking_are_sent_as_set() {
        let s = spec(json!({
            "engine": "mysql",
            "connection": {"host": "my", "port": 3306, "database": "mysql",
                "secretRef": {"name": "admin"}},
            "healthCheck": {"enabled": false, "timeoutSeconds": 3},
            "mysql": {"timeout": "1m30s", "readTimeout": "500ms"},
            "resourceTracking": {"commentFormat": "{{.Kind}}/{{.UID}}",
                "mysql": {"useUserAttributes": false, "metadataDatabase": "ops",
                    "metadataTableName": "managed"}}
        }));
        // The probe (only) carries healthCheck.timeoutSeconds; `enabled` is the hub's.
        assert_eq!(probe(&s, None, false).probe_timeout_seconds, Some(3));
        assert_eq!(instance(&s, None).probe_timeout_seconds, None);
        let session = instance(&s, None).session.unwrap();
        assert_eq!(session.connect_timeout_ms, Some(90_000));
        assert_eq!(session.read_timeout_ms, Some(500));
        assert_eq!(session.write_timeout_ms, Some(30_000));
        assert_eq!(
            instance(&s, None).tracking,
            Some(Tracking {
                comment_format: "{{.Kind}}/{{.UID}}".into(),
                use_user_attributes: false,
                metadata_database: Some("ops".into()),
                metadata_table: "managed".into(),
            })
        );
        // Disabled tracking is not sent at all; a bare block takes the CRD's defaults.
        let mut off = s.clone();
        off.resource_tracking.as_mut().unwrap().enabled = false;
        assert_eq!(instance(&off, None).tracking, None);
        let bare = spec(json!({
            "engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres",
                "secretRef": {"name": "admin"}},
            "resourceTracking": {}
        }));
        let t = instance(&bare, None).tracking.unwrap();
        assert_eq!(
            t.comment_format,
            "managed-by:{{.Operator}},cr:{{.Namespace}}/{{.Name}}"
        );
        assert!(t.use_user_attributes);
        assert_eq!(t.metadata_table, "_dbops_metadata");
        assert_eq!(probe(&bare, None, false).probe_timeout_seconds, None);
    }

    #[test]
    fn every_engine_and_mode_has_its_wire_spelling() {
        for e in [
            api::Engine::Postgres,
            api::Engine::Mysql,
            api::Engine::Mariadb,
            api::Engine::Cockroachdb,
            api::Engine::Clickhouse,
        ] {
            assert_eq!(
                serde_json::to_value(engine(e)).unwrap(),
                serde_json::to_value(e).unwrap()
            );
        }
        for m in [
            PostgresSslMode::Disable,
            PostgresSslMode::Allow,
            PostgresSslMode::Prefer,
            PostgresSslMode::Require,
            PostgresSslMode::VerifyCa,
            PostgresSslMode::VerifyFull,
        ] {
            assert_eq!(
                json!(postgres_ssl_mode(m)),
                serde_json::to_value(m).unwrap()
            );
        }
        for m in [
            MysqlTlsMode::Disabled,
            MysqlTlsMode::Preferred,
            MysqlTlsMode::Required,
            MysqlTlsMode::SkipVerify,
        ] {
            assert_eq!(json!(mysql_tls_mode(m)), serde_json::to_value(m).unwrap());
        }
        for m in [
            TlsMode::Disable,
            TlsMode::Require,
            TlsMode::VerifyCa,
            TlsMode::VerifyFull,
        ] {
            assert_eq!(json!(tls_mode(m)), serde_json::to_value(m).unwrap());
        }
    }
}
