//! Resource tracking (the instance's `spec.resourceTracking`): the marker text and the
//! statements that put it where db-provision-operator's adapters put it —
//! `COMMENT ON DATABASE` / `COMMENT ON ROLE` in PostgreSQL; in MySQL 8.0.21+ a `managed_by`
//! user attribute for users; everywhere else in MySQL/MariaDB a row of the metadata table
//! (`resource_type`, `resource_name`, `metadata`, `managed_since`), the table created as that
//! operator creates it.

use super::quote::{QuoteError, mysql_ident, mysql_literal, pg_ident, pg_literal};

/// What `{{.Operator}}` stands for.
pub const OPERATOR: &str = "dbprov";

/// The Kubernetes resource an object is managed by (the intent's resource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// Kind, e.g. `Database`.
    pub kind: String,
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// A tracked object in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// A database (MySQL: a schema).
    Database(&'a str),
    /// A login user.
    User(&'a str),
    /// A group role.
    Role(&'a str),
}

impl<'a> Object<'a> {
    /// `resource_type` in the metadata table.
    pub fn resource_type(self) -> &'static str {
        match self {
            Object::Database(_) => "database",
            Object::User(_) => "user",
            Object::Role(_) => "role",
        }
    }

    /// The object's name in the server.
    pub fn name(self) -> &'a str {
        match self {
            Object::Database(n) | Object::User(n) | Object::Role(n) => n,
        }
    }
}

/// The marker: `format` with `{{.Operator}}`, `{{.Kind}}`, `{{.Name}}`, `{{.Namespace}}` and
/// `{{.UID}}` replaced, as the reference operator does it (for a cluster-scoped resource
/// `{{.Namespace}}/` goes away whole, so `cr:{{.Namespace}}/{{.Name}}` reads `cr:name`).
pub fn render(format: &str, owner: &Owner) -> String {
    let mut out = format
        .replace("{{.Operator}}", OPERATOR)
        .replace("{{.Kind}}", &owner.kind)
        .replace("{{.Name}}", &owner.name);
    if owner.namespace.is_empty() {
        out = out.replace("{{.Namespace}}/", "");
    }
    out.replace("{{.Namespace}}", &owner.namespace)
        .replace("{{.UID}}", &owner.uid)
}

/// PostgreSQL: `COMMENT ON DATABASE|ROLE … IS '…'` (users and roles are both roles).
pub fn pg_comment(object: Object<'_>, comment: &str) -> Result<String, QuoteError> {
    let what = match object {
        Object::Database(_) => "DATABASE",
        Object::User(_) | Object::Role(_) => "ROLE",
    };
    Ok(format!(
        "COMMENT ON {what} {} IS {}",
        pg_ident(object.name())?,
        pg_literal(comment)?
    ))
}

/// PostgreSQL: the comment of a database or role, `$1` its name.
pub fn pg_read_comment(object: Object<'_>) -> &'static str {
    match object {
        Object::Database(_) => {
            "SELECT COALESCE(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = $1"
        }
        Object::User(_) | Object::Role(_) => {
            "SELECT COALESCE(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1"
        }
    }
}

/// MySQL 8.0.21+: `ALTER USER 'user'@'host' ATTRIBUTE '{"managed_by": "…"}'` (MySQL merges
/// the attribute into the account's others).
pub fn my_user_attribute(user: &str, host: &str, comment: &str) -> Result<String, QuoteError> {
    let attribute = serde_json::json!({ "managed_by": comment }).to_string();
    Ok(format!(
        "ALTER USER {}@{} ATTRIBUTE {}",
        mysql_literal(user)?,
        mysql_literal(host)?,
        mysql_literal(&attribute)?
    ))
}

/// Whether a server version supports user attributes: MySQL 8.0.21 and later (not MariaDB,
/// whose 10.x versions the reference operator mistook for newer MySQL).
pub fn supports_user_attributes(version: &str) -> bool {
    if version.contains("MariaDB") {
        return false;
    }
    super::version_number(version) >= (8, 0, 21)
}

/// `` `database`.`table` `` of the metadata table.
fn table(database: &str, table: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "{}.{}",
        mysql_ident(database)?,
        mysql_ident(table)?
    ))
}

/// MySQL/MariaDB: the metadata table, as the reference operator creates it.
pub fn my_create_metadata_table(database: &str, name: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         resource_type VARCHAR(50) NOT NULL, \
         resource_name VARCHAR(255) NOT NULL, \
         metadata TEXT, \
         managed_since TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
         PRIMARY KEY (resource_type, resource_name)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        table(database, name)?
    ))
}

/// MySQL/MariaDB: records an object's marker (binds: type, name, marker).
pub fn my_upsert_metadata(database: &str, name: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "INSERT INTO {} (resource_type, resource_name, metadata) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE metadata = VALUES(metadata)",
        table(database, name)?
    ))
}

/// MySQL/MariaDB: forgets a dropped object (binds: type, name).
pub fn my_delete_metadata(database: &str, name: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "DELETE FROM {} WHERE resource_type = ? AND resource_name = ?",
        table(database, name)?
    ))
}

/// MySQL/MariaDB: whether the metadata table exists (binds: database, table).
pub const MY_METADATA_TABLE_EXISTS: &str =
    "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(namespace: &str) -> Owner {
        Owner {
            kind: "Database".into(),
            namespace: namespace.into(),
            name: "orders".into(),
            uid: "0b7c".into(),
        }
    }

    #[test]
    fn markers_render_like_the_reference_operator() {
        let default = "managed-by:{{.Operator}},cr:{{.Namespace}}/{{.Name}}";
        assert_eq!(
            render(default, &owner("team-a")),
            "managed-by:dbprov,cr:team-a/orders"
        );
        // Cluster-scoped: the namespace and its slash go away.
        assert_eq!(render(default, &owner("")), "managed-by:dbprov,cr:orders");
        assert_eq!(
            render("{{.Kind}} {{.UID}} {{.Namespace}} {{.Unknown}}", &owner("")),
            "Database 0b7c  {{.Unknown}}"
        );
    }

    #[test]
    fn postgres_comments_quote_names_and_text() {
        assert_eq!(
            pg_comment(Object::Database("orders"), "managed-by:dbprov").unwrap(),
            "COMMENT ON DATABASE \"orders\" IS 'managed-by:dbprov'"
        );
        assert_eq!(
            pg_comment(Object::User("o\"x"), "it's").unwrap(),
            "COMMENT ON ROLE \"o\"\"x\" IS 'it''s'"
        );
        assert!(pg_comment(Object::Role(""), "x").is_err());
    }

    #[test]
    fn mysql_user_attributes_are_json_in_a_quoted_literal() {
        assert_eq!(
            my_user_attribute("app", "%", "cr:team-a/\"app\"").unwrap(),
            r#"ALTER USER 'app'@'%' ATTRIBUTE '{"managed_by":"cr:team-a/\\"app\\""}'"#
        );
        assert!(supports_user_attributes("8.0.21"));
        assert!(supports_user_attributes("8.4.3-commercial"));
        assert!(!supports_user_attributes("8.0.20"));
        assert!(!supports_user_attributes("5.7.44-log"));
        assert!(!supports_user_attributes("10.11.6-MariaDB-0+deb12u1"));
    }

    #[test]
    fn the_metadata_table_is_quoted_and_values_are_bound() {
        let create = my_create_metadata_table("mysql", "_dbops_metadata").unwrap();
        assert!(
            create.starts_with(
                "CREATE TABLE IF NOT EXISTS `mysql`.`_dbops_metadata` (resource_type VARCHAR(50)"
            ),
            "{create}"
        );
        assert!(create.contains("PRIMARY KEY (resource_type, resource_name)"));
        assert_eq!(
            my_upsert_metadata("a`b", "t").unwrap(),
            "INSERT INTO `a``b`.`t` (resource_type, resource_name, metadata) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE metadata = VALUES(metadata)"
        );
        assert_eq!(
            my_delete_metadata("d", "t").unwrap(),
            "DELETE FROM `d`.`t` WHERE resource_type = ? AND resource_name = ?"
        );
        assert!(my_create_metadata_table("", "t").is_err());
    }
}
