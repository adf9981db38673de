//! Database engines.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Database engine of an instance: every value the CRD accepts, lowercase on the wire.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL (served). `postgresql` is accepted too.
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL 8 (served).
    Mysql,
    /// MariaDB (served, MySQL dialect).
    Mariadb,
    /// CockroachDB (accepted by the CRD, not served).
    Cockroachdb,
    /// ClickHouse (accepted by the CRD, not served).
    Clickhouse,
}

impl Engine {
    /// True for engines this dbprov version has an adapter for.
    pub fn is_served(self) -> bool {
        matches!(self, Engine::Postgres | Engine::Mysql | Engine::Mariadb)
    }

    /// The wire spelling (`postgres`, `mysql`, ...), also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mariadb => "mariadb",
            Engine::Cockroachdb => "cockroachdb",
            Engine::Clickhouse => "clickhouse",
        }
    }

    /// PostgreSQL dialect (as opposed to MySQL/MariaDB).
    pub fn is_postgres(self) -> bool {
        self == Engine::Postgres
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
