//! PROBE_INSTANCE, and how every other intent reaches its instance (`instance`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Engine, defaults};

/// How to reach an instance: the desired state of PROBE_INSTANCE, and the `instance` of every
/// other operation's desired state.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// The engine.
    pub engine: Engine,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database to connect to.
    pub database: String,
    /// Where the admin credentials are.
    pub credentials: CredentialsRef,
    /// libpq sslmode / MySQL TLS mode (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`; absent: `prefer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
    /// Connect timeout.
    #[serde(default = "defaults::connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// CA certificate and client certificate/key for the admin connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRef>,
    /// PROBE_INSTANCE only: also list the server's databases, users and roles.
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub discover: bool,
    /// Session settings of the agent's connections (absent: the agent's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// PROBE_INSTANCE only: the probe fails when the server has not answered within this many
    /// seconds (absent: only the intent's deadline bounds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_timeout_seconds: Option<u64>,
    /// How the objects the agent creates are marked as managed in the server (absent: not
    /// marked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
    /// Privilege classes the instance allows tenants' users and roles to hold
    /// (`spec.allowedPrivileges`); the agent refuses the others where only the server knows
    /// (e.g. membership in a role that is itself a superuser). docs/security.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_privileges: Vec<PrivilegeClass>,
}

/// A class of privilege that reaches beyond one tenant's databases. A tenant's DatabaseUser,
/// DatabaseRole or DatabaseGrant gets it only when the instance lists it in
/// `spec.allowedPrivileges` (docs/security.md "Privileges").
#[derive(
    Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum PrivilegeClass {
    /// PostgreSQL SUPERUSER or membership in a superuser role; MySQL ALL/SUPER at `*.*`.
    Superuser,
    /// PostgreSQL CREATEROLE; MySQL CREATE USER.
    CreateRole,
    /// PostgreSQL REPLICATION; MySQL REPLICATION SLAVE/CLIENT, BINLOG ADMIN/MONITOR.
    Replication,
    /// PostgreSQL BYPASSRLS.
    #[serde(rename = "BypassRLS")]
    BypassRls,
    /// PostgreSQL pg_read_server_files / pg_write_server_files; MySQL FILE.
    ServerFiles,
    /// PostgreSQL pg_execute_server_program.
    ServerProgram,
    /// PostgreSQL pg_read_all_data / pg_write_all_data / pg_signal_backend-style cluster
    /// roles; MySQL privileges at the global level `*.*`.
    AllDatabases,
}

/// Session settings of the agent's connections to an instance.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Session {
    /// PostgreSQL `application_name` (absent: `dbprov-agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// PostgreSQL `statement_timeout` as the server reads it: milliseconds, its default unit
    /// (absent: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
    /// MySQL: connect timeout in milliseconds (the `mysql` block's `timeout`; absent:
    /// `connectTimeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// MySQL connection character set (absent: `utf8mb4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// MySQL connection collation (absent: the character set's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// MySQL: how long the agent waits for the server's answer to a statement, in
    /// milliseconds; also the server's `net_write_timeout` (absent: no bound but the intent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    /// MySQL: the server's `net_read_timeout` (how long it waits for what the agent sends), in
    /// milliseconds (absent: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u64>,
}

/// How managed objects are marked in the server (the instance's `spec.resourceTracking`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracking {
    /// The marker text; `{{.Operator}}`, `{{.Namespace}}`, `{{.Name}}`, `{{.Kind}}` and
    /// `{{.UID}}` are replaced by the intent's resource.
    pub comment_format: String,
    /// MySQL 8.0.21+: mark users with a user attribute rather than in the metadata table.
    #[serde(default = "defaults::yes")]
    pub use_user_attributes: bool,
    /// MySQL/MariaDB: database of the metadata table (absent: the instance's `database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_database: Option<String>,
    /// MySQL/MariaDB: name of the metadata table.
    pub metadata_table: String,
}

/// Desired state of PROBE_INSTANCE: the instance itself (with `discover`).
pub type ProbeIntent = Instance;

/// A credentials Secret in the workload cluster.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsRef {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace (absent: the agent's own namespace, for cluster-scoped instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key of the username.
    #[serde(default = "defaults::username_key")]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "defaults::password_key")]
    pub password_key: String,
}

/// A Secret in the workload cluster holding TLS material (PEM).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRef {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace (absent: the agent's own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key of the CA certificate.
    #[serde(default = "defaults::ca_key")]
    pub ca_key: String,
    /// Key of the client certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key: Option<String>,
    /// Key of the client key (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_key: Option<String>,
}

/// What PROBE_INSTANCE answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProbeObserved {
    /// The engine probed (as asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// The server's version string.
    pub version: String,
    /// With `discover`: what the server holds (at most [`DISCOVERY_LIMIT`] names per list;
    /// the JSON has `"truncated": true` when a list was cut).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "capped_discovery"
    )]
    pub discovered: Option<Discovered>,
}

/// Names kept per list of a discovery: the answer must stay far below the gRPC message
/// limit (4 MiB) whatever the server holds.
pub const DISCOVERY_LIMIT: usize = 2000;

/// Names found on a server: system objects and the admin user left out.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Discovered {
    /// Databases.
    pub databases: Vec<String>,
    /// Login users.
    pub users: Vec<String>,
    /// Roles without login.
    pub roles: Vec<String>,
}

/// Serializes a discovery with at most [`DISCOVERY_LIMIT`] names per list (names over 256
/// bytes left out), adding `"truncated": true` when anything was cut, so a server with very
/// many objects answers a bounded list instead of a result over the message limit. Applied
/// wherever the answer is serialized, so no caller can forget it.
fn capped_discovery<S: serde::Serializer>(
    value: &Option<Discovered>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Capped<'a> {
        databases: Vec<&'a String>,
        users: Vec<&'a String>,
        roles: Vec<&'a String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    }
    let Some(d) = value else {
        return serializer.serialize_none();
    };
    fn cap<'a>(list: &'a [String], truncated: &mut bool) -> Vec<&'a String> {
        let kept: Vec<&String> = list
            .iter()
            .filter(|n| n.len() <= 256)
            .take(DISCOVERY_LIMIT)
            .collect();
        *truncated |= kept.len() < list.len();
        kept
    }
    let mut truncated = false;
    let databases = cap(&d.databases, &mut truncated);
    let users = cap(&d.users, &mut truncated);
    let roles = cap(&d.roles, &mut truncated);
    serializer.serialize_some(&Capped {
        databases,
        users,
        roles,
        truncated,
    })
}
