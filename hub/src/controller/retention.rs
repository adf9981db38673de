//! Backup retention: which completed backups a schedule keeps. Grandfather-father-son
//! buckets as restic and borg define them: `keepLast` keeps the newest N; `keepHourly` keeps
//! the newest backup of each of the last N hours that have one, and likewise for days, ISO
//! weeks, months and years, in the schedule's time zone. A backup kept by any rule stays;
//! one younger than `minAge` always stays. Pure logic, no Kubernetes types.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{Timestamp, tz::TimeZone};

/// A completed backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Resource name.
    pub name: String,
    /// When its dump finished.
    pub completed_at: Timestamp,
}

/// The keep rules (0: rule off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Newest N.
    pub last: u32,
    /// One per hour, last N hours with a backup.
    pub hourly: u32,
    /// One per day.
    pub daily: u32,
    /// One per ISO week.
    pub weekly: u32,
    /// One per month.
    pub monthly: u32,
    /// One per year.
    pub yearly: u32,
    /// Never delete a backup younger than this many seconds.
    pub min_age_seconds: i64,
}

impl Rules {
    /// Whether any rule keeps something (no rule at all would delete everything).
    pub fn any(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly > 0
            || self.min_age_seconds > 0
    }
}

/// Why each kept backup is kept, by name; every candidate not in the map is expired.
pub fn keep(
    candidates: &[Candidate],
    rules: &Rules,
    tz: &TimeZone,
    now: Timestamp,
) -> BTreeMap<String, Vec<&'static str>> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    // Newest first; ties by name for a stable answer.
    sorted.sort_by(|a, b| {
        b.completed_at
            .cmp(&a.completed_at)
            .then(b.name.cmp(&a.name))
    });
    let mut kept: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for c in sorted.iter().take(rules.last as usize) {
        kept.entry(c.name.clone()).or_default().push("last");
    }
    type Bucket = fn(&k8s_openapi::jiff::Zoned) -> (i32, i32, i32, i32);
    let buckets: [(&'static str, u32, Bucket); 5] = [
        ("hourly", rules.hourly, |z| {
            (
                z.year().into(),
                z.month().into(),
                z.day().into(),
                z.hour().into(),
            )
        }),
        ("daily", rules.daily, |z| {
            (z.year().into(), z.month().into(), z.day().into(), 0)
        }),
        ("weekly", rules.weekly, |z| {
            let w = z.date().iso_week_date();
            (w.year().into(), w.week().into(), 0, 0)
        }),
        ("monthly", rules.monthly, |z| {
            (z.year().into(), z.month().into(), 0, 0)
        }),
        ("yearly", rules.yearly, |z| (z.year().into(), 0, 0, 0)),
    ];
    for (reason, n, bucket) in buckets {
        let mut last_bucket = None;
        let mut count = 0;
        for c in &sorted {
            if count >= n {
                break;
            }
            let b = bucket(&c.completed_at.to_zoned(tz.clone()));
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                count += 1;
                kept.entry(c.name.clone()).or_default().push(reason);
            }
        }
    }
    if rules.min_age_seconds > 0 {
        for c in &sorted {
            if now.as_second() - c.completed_at.as_second() < rules.min_age_seconds {
                kept.entry(c.name.clone()).or_default().push("minAge");
            }
        }
    }
    kept
}

/// The candidates `keep` does not keep, oldest first.
pub fn expired(
    candidates: &[Candidate],
    rules: &Rules,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<String> {
    let kept = keep(candidates, rules, tz, now);
    let mut out: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !kept.contains_key(&c.name))
        .collect();
    out.sort_by_key(|a| a.completed_at);
    out.into_iter().map(|c| c.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn c(name: &str, t: &str) -> Candidate {
        Candidate {
            name: name.into(),
            completed_at: at(t),
        }
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let cs = [
            c("a", "2026-01-01T00:00:00Z"),
            c("b", "2026-01-02T00:00:00Z"),
            c("c", "2026-01-03T00:00:00Z"),
        ];
        let rules = Rules {
            last: 2,
            ..Default::default()
        };
        assert_eq!(
            expired(&cs, &rules, &TimeZone::UTC, at("2026-02-01T00:00:00Z")),
            vec!["a"]
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_for_n_days_with_backups() {
        let cs = [
            c("d1-early", "2026-03-01T01:00:00Z"),
            c("d1-late", "2026-03-01T23:00:00Z"),
            c("d2", "2026-03-02T12:00:00Z"),
            // No backup on the 3rd: the rule counts days that have one.
            c("d4-a", "2026-03-04T08:00:00Z"),
            c("d4-b", "2026-03-04T09:00:00Z"),
        ];
        let rules = Rules {
            daily: 3,
            ..Default::default()
        };
        let now = at("2026-03-05T00:00:00Z");
        let kept = keep(&cs, &rules, &TimeZone::UTC, now);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            vec!["d1-late", "d2", "d4-b"]
        );
        assert_eq!(
            expired(&cs, &rules, &TimeZone::UTC, now),
            vec!["d1-early", "d4-a"]
        );
    }

    #[test]
    fn days_are_cut_in_the_schedules_time_zone() {
        // 23:30 UTC on the 1st is already the 2nd in Berlin: one Berlin day, one backup kept.
        let cs = [
            c("a", "2026-06-01T23:30:00Z"),
            c("b", "2026-06-02T08:00:00Z"),
        ];
        let rules = Rules {
            daily: 5,
            ..Default::default()
        };
        let now = at("2026-06-03T00:00:00Z");
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(expired(&cs, &rules, &berlin, now), vec!["a"]);
        assert!(expired(&cs, &rules, &TimeZone::UTC, now).is_empty());
    }

    #[test]
    fn gfs_rules_combine_and_min_age_protects_the_young() {
        // Daily backups at 03:00 for 100 days.
        let start = at("2026-01-01T03:00:00Z");
        let cs: Vec<Candidate> = (0..100)
            .map(|d| Candidate {
                name: format!("b{d:03}"),
                completed_at: start
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(24 * d))
                    .unwrap(),
            })
            .collect();
        let now = cs[99].completed_at;
        let rules = Rules {
            last: 2,
            daily: 7,
            weekly: 4,
            monthly: 3,
            ..Default::default()
        };
        let kept = keep(&cs, &rules, &TimeZone::UTC, now);
        // 7 daily (b093..b099) ∪ 4 weekly (newest of each ISO week) ∪ 3 monthly (newest of
        // April, March, February) — and keepLast's two are among the daily ones.
        assert!(kept.contains_key("b099") && kept["b099"].contains(&"last"));
        for d in 93..100 {
            assert!(kept[&format!("b{d:03}")].contains(&"daily"));
        }
        assert!(kept.get("b092").is_none_or(|r| !r.contains(&"daily")));
        // 2026-03-31 (day 89) is the newest of March; 2026-02-28 (day 58) of February.
        assert!(kept["b089"].contains(&"monthly"));
        assert!(kept["b058"].contains(&"monthly"));
        assert!(!kept.contains_key("b000"));
        let weekly: Vec<_> = kept
            .iter()
            .filter(|(_, r)| r.contains(&"weekly"))
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(weekly.len(), 4);
        let with_min_age = Rules {
            min_age_seconds: 30 * 86_400,
            ..rules
        };
        let kept_young = keep(&cs, &with_min_age, &TimeZone::UTC, now);
        assert!(kept_young.len() >= 30 && kept_young.contains_key("b070"));
        assert_eq!(
            expired(&cs, &with_min_age, &TimeZone::UTC, now).len(),
            100 - kept_young.len()
        );
    }
}
