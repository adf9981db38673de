//! What Flyway's `info` and `validate` make of the files and the history: each migration's
//! state in Flyway's words, the problems `validateOnMigrate` refuses, and what `migrate`
//! would apply, in order. Pure: the run reads the history and applies what this returns.

use std::collections::{BTreeMap, HashMap};

use dbprov_contract::migration::MigrationInfo;

use super::naming::Version;

/// A migration resolved from a file.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `None`: repeatable.
    pub version: Option<Version>,
    /// Description from the file name.
    pub description: String,
    /// The file name as recorded in `script`.
    pub script: String,
    /// Flyway's checksum.
    pub checksum: i32,
}

/// A row of the history table.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub installed_rank: i32,
    pub version: Option<String>,
    pub description: String,
    /// `SQL`, `BASELINE`, `SCHEMA`, `DELETE`, ... (Flyway's `MigrationType`).
    pub kind: String,
    pub script: String,
    pub checksum: Option<i32>,
    pub installed_by: String,
    /// RFC 3339, UTC.
    pub installed_on: Option<String>,
    pub execution_time: i32,
    pub success: bool,
}

/// Flyway `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetVersion {
    /// Every pending version.
    Latest,
    /// None beyond the highest applied.
    Current,
    /// Up to this version.
    Version(Version),
}

impl TargetVersion {
    /// Parses Flyway's `target` setting.
    pub fn parse(s: Option<&str>) -> Result<TargetVersion, String> {
        match s.map(str::trim) {
            None | Some("") => Ok(TargetVersion::Latest),
            Some(t) if t.eq_ignore_ascii_case("latest") => Ok(TargetVersion::Latest),
            Some(t) if t.eq_ignore_ascii_case("current") => Ok(TargetVersion::Current),
            Some(t) => Version::parse(t).map(TargetVersion::Version).ok_or_else(|| {
                format!(
                    "flyway.target: `{t}` is not a version; set it to `latest`, `current` or a version such as `3` or `1.2`"
                )
            }),
        }
    }
}

/// Settings that change the plan.
#[derive(Debug, Clone)]
pub struct Rules {
    pub target: TargetVersion,
    pub out_of_order: bool,
    pub validate: bool,
    /// The history table's name, for messages.
    pub table: String,
}

/// What the files and the history come to.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every migration, in Flyway `info` order.
    pub infos: Vec<MigrationInfo>,
    /// Indices into the resolved migrations, in the order `migrate` applies them.
    pub pending: Vec<usize>,
    /// Why `migrate` refuses to run (validation errors and failed rows).
    pub problems: Vec<String>,
    /// What people should know but does not stop the run.
    pub warnings: Vec<String>,
    /// Highest successfully applied version (baseline included).
    pub current: Option<String>,
}

/// Flyway's `abbreviateDescription`: at most 200 characters, cut ones end in `...`.
pub fn abbreviate_description(d: &str) -> String {
    if d.chars().count() <= 200 {
        return d.to_owned();
    }
    let mut s: String = d.chars().take(197).collect();
    s.push_str("...");
    s
}

/// Flyway's `abbreviateScript`: at most 1000 characters, cut ones keep their end.
pub fn abbreviate_script(s: &str) -> String {
    let n = s.chars().count();
    if n <= 1000 {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(n - 997).collect();
    format!("...{tail}")
}

fn info(
    version: Option<String>,
    description: &str,
    script: &str,
    kind: &str,
    state: &str,
    checksum: Option<i32>,
    row: Option<&Applied>,
) -> MigrationInfo {
    MigrationInfo {
        version,
        description: description.to_owned(),
        script: script.to_owned(),
        kind: kind.to_owned(),
        state: state.to_owned(),
        checksum: checksum.map(|c| c.to_string()),
        installed_on: row.and_then(|r| r.installed_on.clone()),
        execution_millis: row.map(|r| i64::from(r.execution_time)),
    }
}

/// Plans `migrate` over `resolved` (duplicates already refused) and the history `applied`
/// (in any order).
pub fn plan(resolved: &[Resolved], applied: &[Applied], rules: &Rules) -> Plan {
    let mut p = Plan::default();
    let mut rows: Vec<&Applied> = applied.iter().collect();
    rows.sort_by_key(|r| r.installed_rank);

    // `repair` marks a missing migration deleted with a DELETE row: the rows before it of the
    // same migration no longer count.
    let mut deleted: Vec<i32> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.kind == "DELETE" {
            for earlier in &rows[..i] {
                let same = match (&r.version, &earlier.version) {
                    (Some(a), Some(b)) => Version::parse(a) == Version::parse(b),
                    (None, None) => earlier.description == r.description,
                    _ => false,
                };
                if same && earlier.kind != "DELETE" {
                    deleted.push(earlier.installed_rank);
                }
            }
        }
    }
    let live = |r: &Applied| r.kind != "DELETE" && !deleted.contains(&r.installed_rank);

    let by_version: BTreeMap<Version, usize> = resolved
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.version.clone().map(|v| (v, i)))
        .collect();
    let repeatables: HashMap<&str, usize> = resolved
        .iter()
        .enumerate()
        .filter(|(_, m)| m.version.is_none())
        .map(|(i, m)| (m.description.as_str(), i))
        .collect();
    let max_resolved = by_version.keys().next_back().cloned();

    let baseline = rows
        .iter()
        .filter(|r| live(r) && r.kind == "BASELINE" && r.success)
        .filter_map(|r| r.version.as_deref().and_then(Version::parse))
        .max();
    let max_applied = rows
        .iter()
        .filter(|r| live(r) && r.success && r.kind != "SCHEMA")
        .filter_map(|r| r.version.as_deref().and_then(Version::parse))
        .max();
    p.current = max_applied.as_ref().map(|v| {
        rows.iter()
            .filter(|r| live(r) && r.success)
            .filter_map(|r| r.version.as_deref())
            .find(|t| Version::parse(t).as_ref() == Some(v))
            .map_or_else(|| v.text.clone(), str::to_owned)
    });
    let limit: Option<Option<Version>> = match &rules.target {
        TargetVersion::Latest => None,
        TargetVersion::Current => Some(max_applied.clone()),
        TargetVersion::Version(v) => Some(Some(v.clone())),
    };
    let above_target = |v: &Version| match &limit {
        None => false,
        Some(None) => true,
        Some(Some(t)) => v > t,
    };
    if let TargetVersion::Version(t) = &rules.target {
        let known = by_version.contains_key(t)
            || rows
                .iter()
                .any(|r| r.version.as_deref().and_then(Version::parse).as_ref() == Some(t));
        if !known {
            p.problems.push(format!(
                "flyway.target: No migration with a target version {} could be found; set it to the version of an existing migration, `latest` or `current`",
                t.text
            ));
        }
    }

    // Applied rows, in rank order.
    let mut applied_versions: Vec<Version> = Vec::new();
    let mut highest_so_far: Option<Version> = None;
    let latest_repeatable: HashMap<&str, i32> = rows
        .iter()
        .filter(|r| live(r) && r.version.is_none() && r.kind != "SCHEMA")
        .fold(HashMap::new(), |mut m, r| {
            m.insert(r.description.as_str(), r.installed_rank);
            m
        });
    let mut outdated: Vec<usize> = Vec::new();
    for r in &rows {
        let checksum = r.checksum;
        if r.kind == "DELETE" || deleted.contains(&r.installed_rank) {
            let kind = if r.version.is_some() {
                "Versioned"
            } else {
                "Repeatable"
            };
            p.infos.push(info(
                r.version.clone(),
                &r.description,
                &r.script,
                kind,
                "Deleted",
                checksum,
                Some(r),
            ));
            continue;
        }
        match (r.kind.as_str(), &r.version) {
            ("SCHEMA", _) => {
                p.infos.push(info(
                    None,
                    &r.description,
                    &r.script,
                    "Schema",
                    "Success",
                    None,
                    Some(r),
                ));
            }
            ("BASELINE", v) => {
                if let Some(v) = v.as_deref().and_then(Version::parse) {
                    applied_versions.push(v);
                }
                p.infos.push(info(
                    v.clone(),
                    &r.description,
                    &r.script,
                    "Baseline",
                    "Baseline",
                    checksum,
                    Some(r),
                ));
            }
            (_, Some(text)) => {
                let version = Version::parse(text);
                let local = version
                    .as_ref()
                    .and_then(|v| by_version.get(v))
                    .map(|i| &resolved[*i]);
                if let Some(v) = &version {
                    applied_versions.push(v.clone());
                }
                let state = if !r.success {
                    p.problems.push(format!(
                        "Detected failed migration to version {text} ({}) in {}: Flyway will not migrate past it. Remove any half-completed changes it made, then run the Repair action (it deletes the failed row) and migrate again",
                        r.description, rules.table
                    ));
                    "Failed"
                } else if let Some(m) = local {
                    let mut state = "Success";
                    if r.kind != "SQL" {
                        if rules.validate {
                            p.problems.push(format!(
                                "Migration type mismatch for migration version {text}: applied to database: {}, resolved locally: SQL ({}); restore the original migration or run the Repair action to record the file's type",
                                r.kind, m.script
                            ));
                        }
                    } else if r.checksum != Some(m.checksum) {
                        state = "Checksum mismatch";
                        if rules.validate {
                            p.problems.push(format!(
                                "Migration checksum mismatch for migration version {text}: applied to database: {}, resolved locally: {} ({}). Either revert the changes to the migration, or run the Repair action to update the schema history",
                                r.checksum.map_or("null".to_owned(), |c| c.to_string()),
                                m.checksum,
                                m.script
                            ));
                        }
                    } else if abbreviate_description(&m.description) != r.description
                        && rules.validate
                    {
                        p.problems.push(format!(
                            "Migration description mismatch for migration version {text}: applied to database: {}, resolved locally: {} ({}). Either revert the file name, or run the Repair action to update the schema history",
                            r.description, m.description, m.script
                        ));
                    }
                    if state == "Success"
                        && let (Some(v), Some(h)) = (&version, &highest_so_far)
                        && v < h
                    {
                        state = "Out of Order";
                    }
                    state
                } else if version
                    .as_ref()
                    .zip(max_resolved.as_ref())
                    .is_none_or(|(v, m)| v > m)
                {
                    p.warnings.push(format!(
                        "{} has version {text} ({}), newer than every migration file: applied by a newer release of the files (state Future)",
                        rules.table, r.script
                    ));
                    "Future"
                } else {
                    if rules.validate {
                        p.problems.push(format!(
                            "Detected applied migration not resolved locally: {text} ({}). Restore the file, or if it was removed on purpose run the Repair action to mark it deleted",
                            r.script
                        ));
                    }
                    "Missing"
                };
                if r.success
                    && let Some(v) = version
                    && highest_so_far.as_ref().is_none_or(|h| &v > h)
                {
                    highest_so_far = Some(v);
                }
                p.infos.push(info(
                    Some(text.clone()),
                    &r.description,
                    &r.script,
                    "Versioned",
                    state,
                    checksum,
                    Some(r),
                ));
            }
            (_, None) => {
                let latest =
                    latest_repeatable.get(r.description.as_str()) == Some(&r.installed_rank);
                let local = repeatables.get(r.description.as_str()).copied();
                let state = if !latest {
                    "Superseded"
                } else if !r.success {
                    p.problems.push(format!(
                        "Detected failed repeatable migration {} ({}) in {}: remove any half-completed changes, then run the Repair action and migrate again",
                        r.description, r.script, rules.table
                    ));
                    "Failed"
                } else if let Some(i) = local {
                    if r.checksum == Some(resolved[i].checksum) {
                        "Success"
                    } else {
                        outdated.push(i);
                        "Outdated"
                    }
                } else {
                    if rules.validate {
                        p.problems.push(format!(
                            "Detected applied migration not resolved locally: {} ({}). Restore the file, or if it was removed on purpose run the Repair action to mark it deleted",
                            r.description, r.script
                        ));
                    }
                    "Missing"
                };
                p.infos.push(info(
                    None,
                    &r.description,
                    &r.script,
                    "Repeatable",
                    state,
                    checksum,
                    Some(r),
                ));
            }
        }
    }

    // Versioned files not applied, by version.
    for (v, i) in &by_version {
        let m = &resolved[*i];
        let state = if baseline.as_ref().is_some_and(|b| v == b) {
            // What the real Flyway 13 shows for the file at the baseline's version.
            "Ignored (Baseline)"
        } else if applied_versions.iter().any(|a| a == v) {
            continue;
        } else if baseline.as_ref().is_some_and(|b| v < b) {
            "Below Baseline"
        } else if above_target(v) {
            "Above Target"
        } else if max_applied.as_ref().is_some_and(|h| v < h) {
            if rules.out_of_order {
                p.pending.push(*i);
                "Pending"
            } else {
                if rules.validate {
                    p.problems.push(format!(
                        "Detected resolved migration not applied to database: {} ({}), lower than the highest applied version {}. Set flyway.outOfOrder: true to apply it, or rename it to a version above {}",
                        v.text,
                        m.script,
                        max_applied.as_ref().map_or("", |h| h.text.as_str()),
                        max_applied.as_ref().map_or("", |h| h.text.as_str()),
                    ));
                }
                "Ignored"
            }
        } else {
            p.pending.push(*i);
            "Pending"
        };
        p.infos.push(info(
            Some(v.text.clone()),
            &m.description,
            &m.script,
            "Versioned",
            state,
            Some(m.checksum),
            None,
        ));
    }
    // Repeatables, after every versioned one, by description: new ones and changed ones.
    let mut reps: Vec<usize> = repeatables.values().copied().collect();
    reps.sort_by(|a, b| resolved[*a].description.cmp(&resolved[*b].description));
    for i in reps {
        let m = &resolved[i];
        let ever = latest_repeatable.contains_key(m.description.as_str());
        if ever && !outdated.contains(&i) {
            continue;
        }
        p.pending.push(i);
        p.infos.push(info(
            None,
            &m.description,
            &m.script,
            "Repeatable",
            "Pending",
            Some(m.checksum),
            None,
        ));
    }
    p
}

/// What `repair` changes besides deleting failed rows.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairAction {
    /// An applied migration whose checksum, description or type differ from its file's:
    /// the row at `rank` takes the file's (resolved migration `index`).
    Realign { rank: i32, index: usize },
    /// An applied migration whose file is gone (and not a future one): a DELETE row marks it.
    MarkDeleted { row: Applied },
}

/// Flyway `repair`'s realignments and deletions for `applied` (failed rows already removed).
pub fn repair_actions(resolved: &[Resolved], applied: &[Applied]) -> Vec<RepairAction> {
    let mut rows: Vec<&Applied> = applied.iter().collect();
    rows.sort_by_key(|r| r.installed_rank);
    let max_resolved = resolved.iter().filter_map(|m| m.version.clone()).max();
    let mut out = Vec::new();
    // Already marked: a DELETE row and every row before it of the same migration.
    let gone = |r: &Applied| {
        rows.iter().any(|d| {
            d.kind == "DELETE"
                && d.installed_rank > r.installed_rank
                && match (&d.version, &r.version) {
                    (Some(a), Some(b)) => Version::parse(a) == Version::parse(b),
                    (None, None) => d.description == r.description,
                    _ => false,
                }
        })
    };
    for (pos, r) in rows.iter().enumerate() {
        if !r.success || matches!(r.kind.as_str(), "DELETE" | "BASELINE" | "SCHEMA") || gone(r) {
            continue;
        }
        match &r.version {
            Some(text) => {
                let v = Version::parse(text);
                match resolved
                    .iter()
                    .position(|m| m.version.is_some() && m.version == v)
                {
                    Some(i) => {
                        let m = &resolved[i];
                        if r.checksum != Some(m.checksum)
                            || r.kind != "SQL"
                            || r.description != abbreviate_description(&m.description)
                        {
                            out.push(RepairAction::Realign {
                                rank: r.installed_rank,
                                index: i,
                            });
                        }
                    }
                    None => {
                        let future = v.zip(max_resolved.clone()).is_none_or(|(v, m)| v > m);
                        if !future {
                            out.push(RepairAction::MarkDeleted { row: (*r).clone() });
                        }
                    }
                }
            }
            None => {
                // Only the latest row of a repeatable counts; a changed file is just outdated.
                let latest = !rows[pos + 1..].iter().any(|l| {
                    l.version.is_none() && l.description == r.description && l.kind != "DELETE"
                });
                let known = resolved
                    .iter()
                    .any(|m| m.version.is_none() && m.description == r.description);
                if latest && !known {
                    out.push(RepairAction::MarkDeleted { row: (*r).clone() });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(v: Option<&str>, d: &str, c: i32) -> Resolved {
        let script = match v {
            Some(v) => format!("V{v}__{}.sql", d.replace(' ', "_")),
            None => format!("R__{}.sql", d.replace(' ', "_")),
        };
        Resolved {
            version: v.and_then(Version::parse),
            description: d.into(),
            script,
            checksum: c,
        }
    }

    fn row(rank: i32, v: Option<&str>, d: &str, kind: &str, c: Option<i32>, ok: bool) -> Applied {
        Applied {
            installed_rank: rank,
            version: v.map(str::to_owned),
            description: d.into(),
            kind: kind.into(),
            script: match v {
                Some(v) => format!("V{v}__{}.sql", d.replace(' ', "_")),
                None => format!("R__{}.sql", d.replace(' ', "_")),
            },
            checksum: c,
            installed_by: "u".into(),
            installed_on: None,
            execution_time: 1,
            success: ok,
        }
    }

    fn rules() -> Rules {
        Rules {
            target: TargetVersion::Latest,
            out_of_order: false,
            validate: true,
            table: "flyway_schema_history".into(),
        }
    }

    fn states(p: &Plan) -> Vec<(Option<String>, String)> {
        p.infos
            .iter()
            .map(|i| (i.version.clone(), i.state.clone()))
            .collect()
    }

    #[test]
    fn pending_versions_then_changed_repeatables() {
        let files = vec![
            file(Some("1"), "one", 1),
            file(Some("2"), "two", 2),
            file(Some("10"), "ten", 10),
            file(None, "views", 7),
            file(None, "same", 8),
        ];
        let applied = vec![
            row(1, Some("1"), "one", "SQL", Some(1), true),
            row(2, None, "views", "SQL", Some(6), true),
            row(3, None, "same", "SQL", Some(8), true),
        ];
        let p = plan(&files, &applied, &rules());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let order: Vec<&str> = p
            .pending
            .iter()
            .map(|i| files[*i].script.as_str())
            .collect();
        assert_eq!(order, vec!["V2__two.sql", "V10__ten.sql", "R__views.sql"]);
        assert_eq!(p.current.as_deref(), Some("1"));
        assert_eq!(
            states(&p),
            vec![
                (Some("1".into()), "Success".into()),
                (None, "Outdated".into()),
                (None, "Success".into()),
                (Some("2".into()), "Pending".into()),
                (Some("10".into()), "Pending".into()),
                (None, "Pending".into()),
            ]
        );
    }

    #[test]
    fn validation_reports_in_flyways_terms_with_the_fix() {
        let files = vec![
            file(Some("1"), "one", 1),
            file(Some("2"), "two renamed", 2),
            file(Some("3"), "three", 3),
        ];
        let applied = vec![
            row(1, Some("1"), "one", "SQL", Some(99), true),
            row(2, Some("2"), "two", "SQL", Some(2), true),
            row(3, Some("4"), "four", "SQL", Some(4), true),
            row(4, Some("2.5"), "gone", "SQL", Some(5), true),
        ];
        let p = plan(&files, &applied, &rules());
        let all = p.problems.join("\n");
        assert!(all.contains("Migration checksum mismatch for migration version 1: applied to database: 99, resolved locally: 1"), "{all}");
        assert!(
            all.contains("Migration description mismatch for migration version 2"),
            "{all}"
        );
        assert!(
            all.contains("Detected applied migration not resolved locally: 2.5"),
            "{all}"
        );
        assert!(all.contains("Detected resolved migration not applied to database: 3 (V3__three.sql), lower than the highest applied version 4. Set flyway.outOfOrder: true"), "{all}");
        assert!(
            p.warnings.iter().any(|w| w.contains("version 4")),
            "{:?}",
            p.warnings
        );
        assert_eq!(p.problems.len(), 4, "{all}");
        let mut loose = rules();
        loose.validate = false;
        let p = plan(&files, &applied, &loose);
        assert!(
            p.problems.is_empty() && p.pending.is_empty(),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn out_of_order_applies_lower_versions_first() {
        let files = vec![
            file(Some("1"), "a", 1),
            file(Some("2"), "b", 2),
            file(Some("3"), "c", 3),
            file(Some("4"), "d", 4),
        ];
        let applied = vec![
            row(1, Some("1"), "a", "SQL", Some(1), true),
            row(2, Some("3"), "c", "SQL", Some(3), true),
        ];
        let mut r = rules();
        r.out_of_order = true;
        let p = plan(&files, &applied, &r);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.pending, vec![1, 3]);
    }

    #[test]
    fn failed_rows_block_even_without_validation() {
        let files = vec![file(Some("1"), "a", 1)];
        let applied = vec![row(1, Some("1"), "a", "SQL", Some(1), false)];
        let mut r = rules();
        r.validate = false;
        let p = plan(&files, &applied, &r);
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].starts_with("Detected failed migration to version 1 (a)"));
        assert!(p.problems[0].contains("Repair"));
    }

    #[test]
    fn targets_and_baselines() {
        let files = vec![
            file(Some("1"), "a", 1),
            file(Some("2"), "b", 2),
            file(Some("3"), "c", 3),
        ];
        let mut r = rules();
        r.target = TargetVersion::parse(Some("2")).unwrap();
        let p = plan(&files, &[], &r);
        assert_eq!(p.pending, vec![0, 1]);
        assert_eq!(p.infos[2].state, "Above Target");

        r.target = TargetVersion::Current;
        let p = plan(&files, &[row(1, Some("1"), "a", "SQL", Some(1), true)], &r);
        assert!(p.pending.is_empty());

        r.target = TargetVersion::parse(Some("7")).unwrap();
        let p = plan(&files, &[], &r);
        assert!(
            p.problems[0]
                .starts_with("flyway.target: No migration with a target version 7 could be found"),
            "{:?}",
            p.problems
        );
        assert!(TargetVersion::parse(Some("v2")).is_err());

        let baseline = row(
            1,
            Some("2"),
            "<< Flyway Baseline >>",
            "BASELINE",
            None,
            true,
        );
        let p = plan(&files, &[baseline], &rules());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.pending, vec![2]);
        assert_eq!(
            states(&p),
            vec![
                (Some("2".into()), "Baseline".into()),
                (Some("1".into()), "Below Baseline".into()),
                (Some("2".into()), "Ignored (Baseline)".into()),
                (Some("3".into()), "Pending".into()),
            ]
        );
        assert_eq!(p.current.as_deref(), Some("2"));
    }

    #[test]
    fn deleted_rows_no_longer_count() {
        let files = vec![file(Some("1"), "a", 1)];
        let applied = vec![
            row(1, Some("1"), "a", "SQL", Some(1), true),
            row(2, Some("1.5"), "gone", "SQL", Some(5), true),
            row(3, Some("1.5"), "gone", "DELETE", Some(5), true),
        ];
        let p = plan(&files, &applied, &rules());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.current.as_deref(), Some("1"));
    }

    #[test]
    fn repair_realigns_and_marks_missing_ones_deleted() {
        let files = vec![
            file(Some("1"), "one", 1),
            file(Some("2"), "two renamed", 2),
            file(Some("3"), "three", 3),
            file(None, "v", 9),
        ];
        let applied = vec![
            row(1, Some("1"), "one", "SQL", Some(99), true),
            row(2, Some("2"), "two", "SQL", Some(2), true),
            row(3, Some("2.5"), "gone", "SQL", Some(5), true),
            row(4, Some("3"), "three", "SQL", Some(3), true),
            row(5, Some("9"), "future", "SQL", Some(9), true),
            row(6, None, "old view", "SQL", Some(6), true),
            row(7, None, "v", "SQL", Some(1), true),
        ];
        let actions = repair_actions(&files, &applied);
        assert_eq!(
            actions,
            vec![
                RepairAction::Realign { rank: 1, index: 0 },
                RepairAction::Realign { rank: 2, index: 1 },
                RepairAction::MarkDeleted {
                    row: applied[2].clone()
                },
                RepairAction::MarkDeleted {
                    row: applied[5].clone()
                },
            ]
        );
    }

    #[test]
    fn long_descriptions_and_scripts_are_abbreviated_as_flyway_does() {
        let d = "x".repeat(250);
        assert_eq!(abbreviate_description(&d).len(), 200);
        assert!(abbreviate_description(&d).ends_with("..."));
        let s = format!("{}end", "y".repeat(1200));
        assert!(abbreviate_script(&s).starts_with("...") && abbreviate_script(&s).ends_with("end"));
        assert_eq!(abbreviate_script(&s).len(), 1000);
    }
}
