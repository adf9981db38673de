//! DatabaseInstance / ClusterDatabaseInstance: a database server dbprov manages objects in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{
    AllowedNamespaces, CHARSET, ClusterRef, CommonStatus, DATA_KEY, DURATION, DeletionConfirmation,
    DriftPolicy, IDENTIFIER, K8S_NAME, K8S_NAMESPACE,
};

/// Database engine of an instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL (served).
    Postgres,
    /// MySQL 8 (served).
    Mysql,
    /// MariaDB (served, MySQL dialect).
    Mariadb,
    /// CockroachDB (accepted; reported as not supported at reconcile time).
    Cockroachdb,
    /// ClickHouse (accepted; reported as not supported at reconcile time).
    Clickhouse,
}

impl Engine {
    /// True for engines this dbprov build has an adapter for.
    pub fn is_served(self) -> bool {
        matches!(self, Engine::Postgres | Engine::Mysql | Engine::Mariadb)
    }
}

/// Spec shared by DatabaseInstance and ClusterDatabaseInstance.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseInstance",
    namespaced,
    status = "DatabaseInstanceStatus",
    shortname = "dbi",
    category = "dbprov",
    doc = "A PostgreSQL or MySQL/MariaDB server that dbprov provisions databases, users, roles and grants in. The agent of `spec.clusterRef` connects to it with the admin credentials of `spec.connection`.",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.connection.host"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.connection.port"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.clusterRef) == has(oldSelf.clusterRef)").message("spec.clusterRef cannot be added or removed after creation; create a new instance instead").field_path(".clusterRef"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseInstanceSpec {
    /// Engine of the server: `postgres`, `mysql`, `mariadb` (served); `cockroachdb`,
    /// `clickhouse` (accepted, not served by this version). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.engine is immutable"))]
    pub engine: Engine,
    /// ManagedCluster whose agent connects to this server. Absent: the hub's default cluster,
    /// so single-cluster manifests work unchanged. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.clusterRef is immutable"))]
    pub cluster_ref: Option<ClusterRef>,
    /// How to reach the server and which admin credentials to use.
    pub connection: ConnectionConfig,
    /// TLS for the admin connection.
    pub tls: Option<TlsConfig>,
    /// How often and how patiently the server is probed.
    pub health_check: Option<HealthCheckConfig>,
    /// PostgreSQL connection options (engine `postgres`).
    pub postgres: Option<PostgresInstanceConfig>,
    /// MySQL/MariaDB connection options (engines `mysql`, `mariadb`).
    pub mysql: Option<MysqlInstanceConfig>,
    /// ClickHouse options (accepted for compatibility; ClickHouse is not served yet).
    pub clickhouse: Option<ClickhouseInstanceConfig>,
    /// Refuse to delete this resource while it has this set (remove it first).
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    /// Default drift policy for objects on this instance.
    pub drift_policy: Option<DriftPolicy>,
    /// Scan the server for objects not managed by any resource (reported in status).
    pub discovery: Option<DiscoveryConfig>,
    /// How managed objects are marked inside the database.
    pub resource_tracking: Option<ResourceTrackingConfig>,
    /// Namespaces whose resources may use this instance (dbprov addition). Default: its own
    /// namespace for a DatabaseInstance, every namespace for a ClusterDatabaseInstance.
    /// Others are refused with InstanceNotPermitted.
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// Privileges beyond one tenant's databases that users, roles and grants on this instance
    /// may hold (dbprov addition): `Superuser`, `CreateRole`, `Replication`, `BypassRLS`,
    /// `ServerFiles`, `ServerProgram`, `AllDatabases`. Default: none; a spec asking for one is
    /// refused with PrivilegeNotAllowed. docs/security.md "Privileges".
    pub allowed_privileges: Option<Vec<dbprov_contract::instance::PrivilegeClass>>,
}

pub(crate) fn default_true() -> bool {
    true
}

/// Server address and admin credentials.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
// Neither or both of secretRef/existingSecret pass the schema, as in db-provision-operator's;
// the hub refuses them in status ([`ConnectionConfig::credentials_problem`]).
#[serde(rename_all = "camelCase")]
pub struct ConnectionConfig {
    /// Host name or IP address of the server, as seen from the agent.
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-zA-Z0-9_.:\[\]-]+$"))]
    pub host: String,
    /// TCP port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Database to connect to for administration (e.g. `postgres`, `mysql`).
    #[schemars(length(min = 1, max = 64), pattern(IDENTIFIER))]
    pub database: String,
    /// Secret with the admin credentials (keys `username`/`password` unless remapped).
    pub secret_ref: Option<CredentialsSecretRef>,
    /// Alternative to `secretRef` for Secrets with other key names.
    pub existing_secret: Option<CredentialsSecretRef>,
}

impl ConnectionConfig {
    /// Why the admin credentials cannot be found, naming the fields and the fix.
    pub fn credentials_problem(&self) -> Option<&'static str> {
        match (&self.secret_ref, &self.existing_secret) {
            (Some(_), None) | (None, Some(_)) => None,
            (None, None) => Some(
                "spec.connection has no admin credentials: set spec.connection.secretRef (or \
                 spec.connection.existingSecret) to the Secret holding them",
            ),
            (Some(_), Some(_)) => Some(
                "spec.connection.secretRef and spec.connection.existingSecret are both set: \
                 they are alternatives for the same Secret; keep one",
            ),
        }
    }
}

/// A Secret holding a username and a password.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret (read by the agent in the workload cluster).
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Namespace of the Secret. Defaults to the resource's namespace (for a cluster-scoped
    /// instance: the agent's namespace).
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
    /// Key names inside the Secret.
    pub keys: Option<CredentialKeys>,
}

/// Key names of a credentials Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialKeys {
    /// Key holding the username.
    #[serde(default = "default_username_key")]
    #[schemars(pattern(DATA_KEY))]
    pub username: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(pattern(DATA_KEY))]
    pub password: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// TLS verification mode for the admin connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// No TLS.
    #[default]
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS, server certificate signed by the given CA.
    VerifyCa,
    /// TLS, CA and host name verified.
    VerifyFull,
}

/// TLS settings for the admin connection.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// Use TLS.
    pub enabled: Option<bool>,
    /// `disable`, `require`, `verify-ca` or `verify-full`.
    #[serde(default)]
    pub mode: TlsMode,
    /// Secret with the CA certificate and, for mutual TLS, a client certificate and key.
    pub secret_ref: Option<TlsSecretRef>,
}

/// A Secret with TLS material.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRef {
    /// Name of the Secret (read by the agent).
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Key names inside the Secret.
    pub keys: Option<TlsKeys>,
}

/// Key names of a TLS Secret.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsKeys {
    /// Key holding the CA certificate (PEM).
    #[serde(default = "default_ca_key")]
    #[schemars(pattern(DATA_KEY))]
    pub ca: String,
    /// Key holding the client certificate (PEM), for mutual TLS.
    #[schemars(pattern(DATA_KEY))]
    pub cert: Option<String>,
    /// Key holding the client private key (PEM), for mutual TLS.
    #[schemars(pattern(DATA_KEY))]
    pub key: Option<String>,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// Health probing of the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    /// Probe the server periodically.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between probes.
    #[serde(default = "default_health_interval")]
    #[schemars(range(min = 5))]
    pub interval_seconds: i32,
    /// Seconds before a probe counts as failed.
    #[serde(default = "default_health_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i32,
}

fn default_health_interval() -> i32 {
    30
}
fn default_health_timeout() -> i32 {
    5
}

/// libpq `sslmode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresSslMode {
    /// Never use TLS.
    Disable,
    /// Try plain first, then TLS.
    Allow,
    /// Try TLS first, then plain.
    #[default]
    Prefer,
    /// TLS, no verification.
    Require,
    /// TLS, verify the CA.
    VerifyCa,
    /// TLS, verify CA and host name.
    VerifyFull,
}

/// PostgreSQL connection options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresInstanceConfig {
    /// libpq `sslmode`.
    #[serde(default)]
    pub ssl_mode: PostgresSslMode,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    #[schemars(range(min = 1))]
    pub connect_timeout: i32,
    /// `application_name` of the admin connections (shown in `pg_stat_activity`).
    #[serde(default = "default_application_name")]
    #[schemars(length(max = 63), pattern(r"^[a-zA-Z0-9_. -]*$"))]
    pub application_name: String,
    /// `statement_timeout` of the admin connections, e.g. `30s`.
    #[schemars(pattern(DURATION))]
    pub statement_timeout: Option<String>,
}

fn default_connect_timeout() -> i32 {
    10
}
fn default_application_name() -> String {
    "db-provision-operator".into()
}

/// MySQL TLS mode (go-sql-driver names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MysqlTlsMode {
    /// No TLS.
    Disabled,
    /// TLS when the server offers it.
    #[default]
    Preferred,
    /// TLS with verification.
    Required,
    /// TLS without verification.
    SkipVerify,
}

/// MySQL/MariaDB connection options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlInstanceConfig {
    /// Connection character set.
    #[serde(default = "default_mysql_charset")]
    #[schemars(pattern(CHARSET))]
    pub charset: String,
    /// Connection collation.
    #[serde(default = "default_mysql_collation")]
    #[schemars(pattern(CHARSET))]
    pub collation: String,
    /// Parse DATE/DATETIME into time values (kept for compatibility; always true here).
    #[serde(default = "default_true")]
    pub parse_time: bool,
    /// Connect timeout, e.g. `10s`.
    #[serde(default = "default_mysql_timeout")]
    #[schemars(pattern(DURATION))]
    pub timeout: String,
    /// Read timeout, e.g. `30s`.
    #[serde(default = "default_mysql_rw_timeout")]
    #[schemars(pattern(DURATION))]
    pub read_timeout: String,
    /// Write timeout, e.g. `30s`.
    #[serde(default = "default_mysql_rw_timeout")]
    #[schemars(pattern(DURATION))]
    pub write_timeout: String,
    /// `disabled`, `preferred`, `required` or `skip-verify`.
    #[serde(default)]
    pub tls: MysqlTlsMode,
}

fn default_mysql_charset() -> String {
    "utf8mb4".into()
}
fn default_mysql_collation() -> String {
    "utf8mb4_unicode_ci".into()
}
fn default_mysql_timeout() -> String {
    "10s".into()
}
fn default_mysql_rw_timeout() -> String {
    "30s".into()
}

/// ClickHouse options (accepted for compatibility).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseInstanceConfig {
    /// HTTP interface port.
    #[schemars(range(min = 1, max = 65535))]
    pub http_port: Option<i32>,
    /// Use TLS.
    pub secure: Option<bool>,
}

/// Discovery of unmanaged objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryConfig {
    /// Scan the server for databases, users and roles no resource manages.
    #[serde(default)]
    pub enabled: bool,
    /// How often to scan, e.g. `30m`.
    #[serde(default = "default_discovery_interval")]
    #[schemars(pattern(DURATION))]
    pub interval: String,
}

fn default_discovery_interval() -> String {
    "30m".into()
}

/// How managed objects are marked in the database.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTrackingConfig {
    /// Mark managed objects.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Text of the PostgreSQL `COMMENT ON` marker. Variables: `{{.Operator}}`,
    /// `{{.Namespace}}`, `{{.Name}}`, `{{.Kind}}`, `{{.UID}}`.
    #[serde(default = "default_comment_format")]
    #[schemars(length(max = 1024))]
    pub comment_format: String,
    /// MySQL marking options.
    pub mysql: Option<MysqlTrackingConfig>,
}

fn default_comment_format() -> String {
    "managed-by:{{.Operator}},cr:{{.Namespace}}/{{.Name}}".into()
}

/// MySQL marking options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlTrackingConfig {
    /// Store the marker in user attributes (MySQL 8.0.21+).
    #[serde(default = "default_true")]
    pub use_user_attributes: bool,
    /// Database of the metadata table (default: the connection's database).
    #[schemars(pattern(IDENTIFIER), length(max = 64))]
    pub metadata_database: Option<String>,
    /// Name of the metadata table used when user attributes are not available.
    #[serde(default = "default_metadata_table")]
    #[schemars(pattern(IDENTIFIER), length(max = 64))]
    pub metadata_table_name: String,
}

fn default_metadata_table() -> String {
    "_dbops_metadata".into()
}

/// Phase of an instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InstancePhase {
    /// Not yet probed.
    #[default]
    Pending,
    /// Reachable with the given credentials.
    Ready,
    /// Unreachable, or the credentials or TLS settings are wrong; see the Ready condition.
    Failed,
}

/// Observed state of an instance.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseInstanceStatus {
    /// Current phase.
    pub phase: Option<InstancePhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Server version reported by the last probe.
    pub version: Option<String>,
    /// When the server was last probed.
    pub last_checked_at: Option<Time>,
    /// Set while deletion is blocked by dependents.
    pub deletion_confirmation: Option<DeletionConfirmation>,
    /// Objects found by discovery.
    pub discovered_resources: Option<DiscoveredResources>,
}

/// Objects found on the server that no resource manages.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredResources {
    /// Unmanaged databases.
    pub databases: Option<Vec<DiscoveredResource>>,
    /// Unmanaged users.
    pub users: Option<Vec<DiscoveredResource>>,
    /// Unmanaged roles.
    pub roles: Option<Vec<DiscoveredResource>>,
    /// When the server was last scanned.
    pub last_scan: Option<Time>,
    /// True when the last scan's lists are incomplete: the agent answers at most 2000 names
    /// per list (databases, users, roles) and leaves out names over 256 bytes. Absent when
    /// nothing was cut. The Ready message says so too.
    pub truncated: Option<bool>,
}

/// One unmanaged object.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredResource {
    /// Name in the database.
    pub name: String,
    /// When it was first seen.
    pub discovered: Option<Time>,
    /// Whether a resource has adopted it since.
    pub adopted: Option<bool>,
}

/// The cluster-scoped twin of [`DatabaseInstanceSpec`]: one server shared by many namespaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "ClusterDatabaseInstance",
    status = "DatabaseInstanceStatus",
    shortname = "cdbi",
    category = "dbprov",
    doc = "A database server shared by many namespaces (cluster-scoped DatabaseInstance). Same fields as DatabaseInstance; Secrets without a namespace are looked up in the agent's namespace.",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.connection.host"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.connection.port"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
pub struct ClusterDatabaseInstanceSpec(pub DatabaseInstanceSpec);
