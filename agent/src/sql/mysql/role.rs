//! MySQL/MariaDB roles: created when missing (they have no attributes to compare) and
//! dropped.

use crate::{error::OpError, sql::mysql::grant::my_role};

/// `CREATE ROLE IF NOT EXISTS 'name'`.
pub fn create(name: &str) -> Result<String, OpError> {
    Ok(format!("CREATE ROLE IF NOT EXISTS {}", my_role(name)?))
}

/// `DROP ROLE IF EXISTS 'name'`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!("DROP ROLE IF EXISTS {}", my_role(name)?))
}
