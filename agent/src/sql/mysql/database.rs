//! MySQL/MariaDB databases: `CREATE DATABASE` with character set and collation, and the
//! difference between an existing database and its spec.

use dbprov_contract::database::{DatabaseObserved, DatabaseSpec};

use crate::{
    error::OpError,
    sql::{
        Repair,
        quote::{mysql_ident, mysql_literal},
        quote_error,
    },
};

/// `CREATE DATABASE IF NOT EXISTS` with the spec's character set and collation.
pub fn create(spec: &DatabaseSpec) -> Result<String, OpError> {
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        mysql_ident(&spec.name).map_err(quote_error)?
    );
    if let Some(my) = &spec.mysql {
        if let Some(c) = &my.charset {
            sql.push_str(&format!(
                " CHARACTER SET {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
        if let Some(c) = &my.collation {
            sql.push_str(&format!(
                " COLLATE {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
    }
    Ok(sql)
}

/// `CREATE DATABASE name`, no attributes (a restore's target).
pub fn create_bare(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "CREATE DATABASE {}",
        mysql_ident(name).map_err(quote_error)?
    ))
}

/// `DROP DATABASE IF EXISTS name`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP DATABASE IF EXISTS {}",
        mysql_ident(name).map_err(quote_error)?
    ))
}

/// How the existing database `cur` differs from `spec` (character set and collation change
/// together).
pub fn plan(spec: &DatabaseSpec, cur: &DatabaseObserved) -> Result<Vec<Repair>, OpError> {
    let mut diffs = Vec::new();
    if let Some(my) = &spec.mysql {
        let cs = my.charset.as_deref().unwrap_or(&cur.encoding);
        let co = my.collation.as_deref().unwrap_or(&cur.collation);
        if !cs.eq_ignore_ascii_case(&cur.encoding) || !co.eq_ignore_ascii_case(&cur.collation) {
            diffs.push(Repair::new(
                "charset/collation",
                format!("{cs}/{co}"),
                format!("{}/{}", cur.encoding, cur.collation),
                format!(
                    "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                    mysql_ident(&spec.name).map_err(quote_error)?,
                    mysql_literal(cs).map_err(quote_error)?,
                    mysql_literal(co).map_err(quote_error)?
                ),
            ));
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::postgres::database::tests::spec;

    #[test]
    fn mysql_create_quotes_every_name_and_value() {
        let sql = create(&spec("shop`; DROP DATABASE mysql; --")).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE IF NOT EXISTS `shop``; DROP DATABASE mysql; --` CHARACTER SET 'utf8mb4' COLLATE 'x''\\\\'"
        );
        assert!(create(&spec(&"x".repeat(65))).is_err());
    }
}
