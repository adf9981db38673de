//! Flyway's file names and versions: `V<version>__<description>.sql` and
//! `R__<description>.sql`; versions compare part by part as numbers (`1.01` == `1.1`,
//! `1.0` == `1`), as Flyway's `MigrationVersion` does.

use std::cmp::Ordering;

/// A migration version: the text as written (`_` read as `.`) and its numeric parts.
#[derive(Debug, Clone)]
pub struct Version {
    /// As Flyway records it in the history (`1_1` → `1.1`).
    pub text: String,
    /// Digits of each part without leading zeros, trailing zero parts dropped (so that
    /// numbers of any size compare without overflow).
    parts: Vec<String>,
}

impl Version {
    /// Parses a version (`1`, `1.2.3`, `2024_01_05`); `None` when a part is not a number.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.replace('_', ".");
        if text.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let trimmed = part.trim_start_matches('0');
            parts.push(if trimmed.is_empty() { "0" } else { trimmed }.to_owned());
        }
        while parts.len() > 1 && parts.last().is_some_and(|p| p == "0") {
            parts.pop();
        }
        Some(Version { text, parts })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).map_or("0", String::as_str);
            let b = other.parts.get(i).map_or("0", String::as_str);
            let o = a.len().cmp(&b.len()).then_with(|| a.cmp(b));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// What a file name means to Flyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// `V<version>__<description>.sql`.
    Versioned {
        /// Its version.
        version: Version,
        /// Description (`_` read as space).
        description: String,
    },
    /// `R__<description>.sql`.
    Repeatable {
        /// Description (`_` read as space).
        description: String,
    },
    /// Not a migration: Flyway skips it; `warning` says why when it looks like a mistake.
    Ignored {
        /// A message naming the file and the fix, for names that nearly match.
        warning: Option<String>,
    },
    /// Looks like a migration but its version is not numeric: Flyway refuses the run.
    Invalid {
        /// The problem, naming the file and the fix.
        problem: String,
    },
}

/// Files Flyway never treats as migrations and that deserve no warning: per-script
/// configuration and documentation.
fn quietly_ignored(base: &str) -> bool {
    base.ends_with(".md") || base.ends_with(".txt") || base.starts_with('.')
}

/// Flyway's SQL callbacks (`beforeMigrate.sql`, ...): dbprov does not run them.
const CALLBACKS: &[&str] = &[
    "beforeMigrate",
    "beforeEachMigrate",
    "beforeEachMigrateStatement",
    "afterEachMigrateStatement",
    "afterEachMigrateStatementError",
    "afterEachMigrate",
    "afterEachMigrateError",
    "afterMigrate",
    "afterMigrateApplied",
    "afterVersioned",
    "afterMigrateError",
    "beforeValidate",
    "afterValidate",
    "beforeRepair",
    "afterRepair",
    "beforeInfo",
    "afterInfo",
    "beforeBaseline",
    "afterBaseline",
    "beforeClean",
    "afterClean",
    "createSchema",
    "beforeCreateSchema",
];

/// Description as Flyway derives it from the part after `__`.
fn description(raw: &str) -> String {
    raw.replace('_', " ")
}

/// Classifies `name` (a path relative to its source; only its last component counts).
pub fn classify(name: &str) -> FileKind {
    let base = name.rsplit('/').next().unwrap_or(name);
    if quietly_ignored(base) {
        return FileKind::Ignored { warning: None };
    }
    if base.ends_with(".sql.conf") {
        // Per-script settings (executeInTransaction, encoding, ...) change how Flyway runs
        // the script; dbprov decides those itself.
        return FileKind::Ignored {
            warning: Some(format!(
                "{name}: Flyway per-script configuration is not read by dbprov (non-transactional statements are detected from the script itself); remove it or check the script runs as intended"
            )),
        };
    }
    let Some(stem) = base.strip_suffix(".sql") else {
        let warning = (base.starts_with('V') || base.starts_with('R'))
            .then(|| base.contains("__"))
            .filter(|b| *b)
            .map(|_| {
                format!(
                    "{name}: not a migration (Flyway reads only `.sql` files); rename it to end in `.sql` or remove it"
                )
            });
        return FileKind::Ignored { warning };
    };
    if CALLBACKS
        .iter()
        .any(|c| stem == *c || stem.starts_with(&format!("{c}__")))
    {
        return FileKind::Ignored {
            warning: Some(format!(
                "{name}: a Flyway callback; dbprov does not run callbacks (move its statements into a migration)"
            )),
        };
    }
    if let Some(rest) = stem.strip_prefix("R__") {
        return FileKind::Repeatable {
            description: description(rest),
        };
    }
    if let Some(rest) = stem.strip_prefix('V')
        && let Some((version, desc)) = rest.split_once("__")
    {
        return match Version::parse(version) {
            Some(version) => FileKind::Versioned {
                version,
                description: description(desc),
            },
            None => FileKind::Invalid {
                problem: format!(
                    "{name}: invalid version `{version}` (Flyway versions are numbers separated by `.` or `_`, e.g. V1_2__{desc}.sql); rename the file"
                ),
            },
        };
    }
    FileKind::Ignored {
        warning: near_miss(stem).map(|fix| {
            format!("{name}: not a migration, Flyway ignores it; did you mean `{fix}.sql`?")
        }),
    }
}

/// The name a near-miss was probably meant to have: a lower-case prefix (`v1__x`), a single
/// underscore after the version (`V1_x`), `R_x`.
fn near_miss(stem: &str) -> Option<String> {
    let (first, rest) = stem.split_at_checked(1)?;
    let prefix = match first {
        "V" | "v" => "V",
        "R" | "r" => "R",
        _ => return None,
    };
    if prefix == "R" {
        if let Some(desc) = rest.strip_prefix("__") {
            return Some(format!("R__{desc}"));
        }
        return rest
            .strip_prefix('_')
            .filter(|d| !d.is_empty())
            .map(|d| format!("R__{d}"));
    }
    if let Some((version, desc)) = rest.split_once("__") {
        return Version::parse(version).map(|_| format!("V{version}__{desc}"));
    }
    // V1_x: the version ends where a part stops being a number.
    let digits_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(rest.len());
    let (version, desc) = rest.split_at(digits_end);
    let version = version.trim_end_matches(['_', '.']);
    if version.is_empty() || desc.is_empty() {
        return None;
    }
    Version::parse(version).map(|_| format!("V{version}__{desc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.999"));
        assert_eq!(v("1.01"), v("1.1"));
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("1_1").text, "1.1");
        assert!(v("20240105") > v("3"));
        assert!(v("1.0.1") > v("1"));
        assert!(v("123456789012345678901234567890") > v("123456789012345678901234567889"));
        assert!(Version::parse("1a").is_none());
        assert!(Version::parse("1..2").is_none());
    }

    #[test]
    fn names_are_classified_as_flyway_does() {
        match classify("sql/V1_2__create_orders_table.sql") {
            FileKind::Versioned {
                version,
                description,
            } => {
                assert_eq!(version.text, "1.2");
                assert_eq!(description, "create orders table");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify("R__views.sql"),
            FileKind::Repeatable {
                description: "views".into()
            }
        );
        assert_eq!(classify("README.md"), FileKind::Ignored { warning: None });
        assert!(matches!(classify("V1a__x.sql"), FileKind::Invalid { .. }));
    }

    #[test]
    fn near_misses_are_named_with_the_fix() {
        for (name, fix) in [
            ("v1__x.sql", "V1__x.sql"),
            ("V1_x.sql", "V1__x.sql"),
            ("V2_1_add_col.sql", "V2_1__add_col.sql"),
            ("R_views.sql", "R__views.sql"),
            ("r__views.sql", "R__views.sql"),
        ] {
            let FileKind::Ignored {
                warning: Some(w), ..
            } = classify(name)
            else {
                panic!("{name}: no warning");
            };
            assert!(w.contains(fix), "{name}: {w}");
        }
        assert_eq!(classify("notes.sql"), FileKind::Ignored { warning: None });
        assert!(matches!(
            classify("V1__x.sql.conf"),
            FileKind::Ignored { warning: Some(_) }
        ));
        assert!(matches!(
            classify("afterMigrate.sql"),
            FileKind::Ignored { warning: Some(_) }
        ));
    }
}
