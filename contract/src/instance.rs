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
    /// With `discover`: what the server holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Discovered>,
}

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
