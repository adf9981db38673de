//! Quoting of identifiers and literals for PostgreSQL and MySQL/MariaDB. Every name that
//! reaches SQL goes through here, even though the CRD schema already restricts names: the
//! schema is one layer, this is the second. Values that can be bound as parameters are bound
//! instead.

/// Why a name or value cannot be put into SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// Empty names are not identifiers.
    #[error("empty identifier")]
    Empty,
    /// NUL cannot be represented (and would truncate in C-based servers).
    #[error("identifier or value contains a NUL byte")]
    Nul,
    /// Longer than the engine allows (it would silently truncate and collide).
    #[error("identifier {0:?} is longer than {1} bytes")]
    TooLong(String, usize),
}

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const PG_MAX_IDENT: usize = 63;
/// MySQL's identifier limit for databases, tables and columns.
pub const MYSQL_MAX_IDENT: usize = 64;

fn check(name: &str, max: usize) -> Result<(), QuoteError> {
    if name.is_empty() {
        return Err(QuoteError::Empty);
    }
    if name.contains('\0') {
        return Err(QuoteError::Nul);
    }
    if name.len() > max {
        return Err(QuoteError::TooLong(name.to_owned(), max));
    }
    Ok(())
}

/// `"name"` with embedded `"` doubled.
pub fn pg_ident(name: &str) -> Result<String, QuoteError> {
    check(name, PG_MAX_IDENT)?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `'value'` with embedded `'` doubled (standard_conforming_strings, on by default since
/// PostgreSQL 9.1; the agent sets it on its connections).
pub fn pg_literal(value: &str) -> Result<String, QuoteError> {
    if value.contains('\0') {
        return Err(QuoteError::Nul);
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// `` `name` `` with embedded backticks doubled.
pub fn mysql_ident(name: &str) -> Result<String, QuoteError> {
    check(name, MYSQL_MAX_IDENT)?;
    Ok(format!("`{}`", name.replace('`', "``")))
}

/// `'value'` with `'` doubled and `\` escaped. The agent's MySQL connections never enable
/// NO_BACKSLASH_ESCAPES, so backslashes are escapes and must be doubled.
pub fn mysql_literal(value: &str) -> Result<String, QuoteError> {
    if value.contains('\0') {
        return Err(QuoteError::Nul);
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "orders\"; DROP TABLE users; --",
        "a\"b",
        "x`y",
        "it's",
        "back\\slash'",
        "名前",
        " spaced ",
        "semi;colon",
        "\u{202e}rtl",
    ];

    #[test]
    fn postgres_identifiers_cannot_escape_their_quotes() {
        for name in HOSTILE {
            let q = pg_ident(name).unwrap();
            assert!(q.starts_with('"') && q.ends_with('"'));
            // Inside, every quote is doubled: stripping pairs leaves no lone quote.
            let inner = &q[1..q.len() - 1];
            assert!(!inner.replace("\"\"", "").contains('"'), "{q}");
        }
        assert_eq!(pg_ident("a\"b").unwrap(), "\"a\"\"b\"");
    }

    #[test]
    fn mysql_identifiers_cannot_escape_their_backticks() {
        for name in HOSTILE {
            let q = mysql_ident(name).unwrap();
            let inner = &q[1..q.len() - 1];
            assert!(!inner.replace("``", "").contains('`'), "{q}");
        }
        assert_eq!(mysql_ident("x`y").unwrap(), "`x``y`");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(pg_literal("it's").unwrap(), "'it''s'");
        assert_eq!(mysql_literal("back\\slash'").unwrap(), "'back\\\\slash'''");
    }

    #[test]
    fn empty_nul_and_overlong_names_are_refused() {
        assert_eq!(pg_ident(""), Err(QuoteError::Empty));
        assert_eq!(pg_ident("a\0b"), Err(QuoteError::Nul));
        assert_eq!(mysql_literal("a\0b"), Err(QuoteError::Nul));
        assert!(matches!(
            pg_ident(&"a".repeat(64)),
            Err(QuoteError::TooLong(_, 63))
        ));
        assert!(mysql_ident(&"a".repeat(64)).is_ok());
        assert!(matches!(
            mysql_ident(&"a".repeat(65)),
            Err(QuoteError::TooLong(_, 64))
        ));
        // Bytes, not characters: a multi-byte name counts its encoded length.
        assert!(pg_ident(&"é".repeat(32)).is_err());
    }
}
