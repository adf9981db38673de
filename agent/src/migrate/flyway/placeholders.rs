//! `${name}` placeholders, replaced as Flyway replaces them: the user's values and Flyway's
//! built-ins (`${flyway:defaultSchema}`, `${flyway:user}`, `${flyway:database}`,
//! `${flyway:timestamp}`, `${flyway:filename}`, `${flyway:table}`), everywhere in the script
//! (comments and quotes included). A placeholder without a value refuses the file.

use std::collections::BTreeMap;

/// Values of Flyway's built-in placeholders for one run.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    /// Schema of the history table (Flyway's default schema).
    pub default_schema: String,
    /// The connecting user.
    pub user: String,
    /// The database.
    pub database: String,
    /// Start of the run, `yyyy-MM-dd HH:mm:ss` (UTC).
    pub timestamp: String,
    /// History table.
    pub table: String,
}

/// Characters Flyway accepts in a placeholder name; `${...}` holding anything else (a shell
/// or JavaScript template inside a function body) is left alone.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// `content` with every placeholder replaced; `Err(name)` for the first one without a value.
pub fn replace(
    content: &str,
    values: &BTreeMap<String, String>,
    builtins: &Builtins,
    filename: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(name_char) {
            out.push_str("${");
            rest = after;
            continue;
        }
        let value = match name {
            "flyway:defaultSchema" => Some(builtins.default_schema.as_str()),
            "flyway:user" => Some(builtins.user.as_str()),
            "flyway:database" => Some(builtins.database.as_str()),
            "flyway:timestamp" => Some(builtins.timestamp.as_str()),
            "flyway:filename" => Some(filename),
            "flyway:table" => Some(builtins.table.as_str()),
            _ => values.get(name).map(String::as_str).or_else(|| {
                // Flyway reads placeholder names case-insensitively.
                values
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            }),
        };
        match value {
            Some(v) => out.push_str(v),
            None => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `secs` since the Unix epoch as `yyyy-MM-dd HH:mm:ss` (UTC).
pub fn timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (proleptic Gregorian; H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtins() -> Builtins {
        Builtins {
            default_schema: "app".into(),
            user: "migrator".into(),
            database: "orders".into(),
            timestamp: "2026-12-01 10:00:00".into(),
            table: "flyway_schema_history".into(),
        }
    }

    #[test]
    fn user_values_and_builtins_are_replaced() {
        let values = BTreeMap::from([("who".to_owned(), "alice".to_owned())]);
        let out = replace(
            "INSERT INTO p VALUES ('${who}', '${WHO}'); -- ${flyway:user}@${flyway:database}.${flyway:defaultSchema} ${flyway:filename} ${flyway:table} ${flyway:timestamp}",
            &values,
            &builtins(),
            "V2__p.sql",
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT INTO p VALUES ('alice', 'alice'); -- migrator@orders.app V2__p.sql flyway_schema_history 2026-12-01 10:00:00"
        );
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        assert_eq!(
            replace(
                "SELECT '${nope}'",
                &BTreeMap::new(),
                &builtins(),
                "V1__x.sql"
            ),
            Err("nope".to_owned())
        );
    }

    #[test]
    fn templates_that_are_not_placeholders_stay() {
        let s = "SELECT $$ `${a + b}` $$, '${', '$ {x}'";
        assert_eq!(replace(s, &BTreeMap::new(), &builtins(), "f").unwrap(), s);
    }

    #[test]
    fn timestamps_are_formatted_in_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(timestamp(1_796_119_445), "2026-12-01 10:04:05");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00");
    }
}
