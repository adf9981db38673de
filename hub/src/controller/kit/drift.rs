//! What an ensure intent asks the agent for — apply a changed spec, or check for drift per
//! the drift policy — and the record of what was applied last, so the agent can revoke what a
//! newer spec no longer lists.

use std::time::Duration;

use dbprov_contract::Mode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{instance::ResolvedInstance, status::StatusUpdate};
use crate::api::common::{CommonStatus, DriftMode, DriftPolicy};

/// Annotation in which hubs before `status.lastAppliedGrants` recorded the memberships and
/// privileges last applied for an object (JSON; names only, never secrets); still read for
/// objects they applied last.
pub const APPLIED_ANNOTATION: &str = "dbops.dbprovision.io/last-applied-grants";

/// The drift policy in force: the object's own, else its instance's, else the default
/// (`detect` every 8h).
pub fn effective_policy(own: Option<&DriftPolicy>, instance: &ResolvedInstance) -> DriftPolicy {
    own.or(instance.spec.drift_policy.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// How often the policy checks (8h when its interval cannot be read).
pub fn check_every(policy: &DriftPolicy) -> Duration {
    parse_interval(&policy.interval).unwrap_or(Duration::from_secs(8 * 3600))
}

/// What to ask the agent for: apply when the spec changed since the last successful reconcile
/// (or that one failed), else the drift mode; None when drift is ignored and nothing changed.
pub fn mode_for(
    status: Option<&CommonStatus>,
    generation: Option<i64>,
    policy: &DriftPolicy,
) -> Option<Mode> {
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let current = status.and_then(|s| s.observed_generation) == generation;
    if !(ready && current) {
        return Some(Mode::Apply);
    }
    match policy.mode {
        DriftMode::Ignore => None,
        DriftMode::Detect => Some(Mode::Detect),
        DriftMode::Correct => Some(Mode::Correct),
    }
}

/// What was applied last as `T`: `status.lastAppliedGrants`, else (an object last applied by
/// an older hub) [`APPLIED_ANNOTATION`]; None when neither is set and readable.
pub fn last_applied<T: serde::de::DeserializeOwned>(
    status: Option<&CommonStatus>,
    meta: &ObjectMeta,
) -> Option<T> {
    match status.and_then(|s| s.last_applied_grants.as_deref()) {
        Some(recorded) => serde_json::from_str(recorded).ok(),
        None => meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_ANNOTATION))
            .and_then(|v| serde_json::from_str(v).ok()),
    }
}

/// `update` also recording `applied` as what was applied last (written with the status of
/// the apply, in the same request).
pub fn record_applied(update: StatusUpdate, applied: &serde_json::Value) -> StatusUpdate {
    update.with("lastAppliedGrants", applied.to_string())
}

pub use crate::duration::parse_duration;

/// [`parse_duration`] for requeue intervals and periods: at least one second.
pub fn parse_interval(s: &str) -> Option<Duration> {
    parse_duration(s).map(|d| d.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(ready: bool, generation: i64) -> CommonStatus {
        CommonStatus {
            conditions: Some(vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "Synced".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: Some(generation),
            }]),
            observed_generation: Some(generation),
            ..CommonStatus::default()
        }
    }

    #[test]
    fn a_changed_or_failed_spec_is_applied_and_a_synced_one_checked_per_policy() {
        let detect = DriftPolicy::default();
        let ignore = DriftPolicy {
            mode: DriftMode::Ignore,
            ..DriftPolicy::default()
        };
        let correct = DriftPolicy {
            mode: DriftMode::Correct,
            ..DriftPolicy::default()
        };
        assert_eq!(mode_for(None, Some(1), &ignore), Some(Mode::Apply));
        assert_eq!(
            mode_for(Some(&status(true, 1)), Some(2), &ignore),
            Some(Mode::Apply)
        );
        assert_eq!(
            mode_for(Some(&status(false, 2)), Some(2), &ignore),
            Some(Mode::Apply)
        );
        assert_eq!(mode_for(Some(&status(true, 2)), Some(2), &ignore), None);
        assert_eq!(
            mode_for(Some(&status(true, 2)), Some(2), &detect),
            Some(Mode::Detect)
        );
        assert_eq!(
            mode_for(Some(&status(true, 2)), Some(2), &correct),
            Some(Mode::Correct)
        );
    }

    #[test]
    fn intervals_parse() {
        let secs = |n: u64| Some(Duration::from_secs(n));
        assert_eq!(parse_interval("8h"), secs(8 * 3600));
        assert_eq!(parse_interval("30m"), secs(1800));
        assert_eq!(parse_interval("7d"), secs(7 * 86_400));
        assert_eq!(parse_interval("2w"), secs(14 * 86_400));
        assert_eq!(parse_interval("1h30m"), secs(5400));
        assert_eq!(parse_interval("1.5h"), secs(5400));
        assert_eq!(parse_interval("1d12h"), secs(129_600));
        assert_eq!(
            parse_interval("0s"),
            secs(1),
            "intervals are at least a second"
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("1m0.5s"),
            Some(Duration::from_millis(60_500))
        );
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        for bad in [
            "",
            "soon",
            "1",
            "h",
            "1.h",
            ".5h",
            "1hh",
            "-1s",
            "1 h",
            "1y",
            "99999999999999999999999w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    /// One parser, one pattern: every duration field's CRD pattern admits exactly what
    /// [`parse_duration`] reads (a value the apiserver accepts never falls back to a default).
    #[test]
    fn the_duration_pattern_admits_exactly_what_the_parser_reads() {
        let pattern = regex::Regex::new(crate::api::common::DURATION).unwrap();
        let table = [
            "30s",
            "10m",
            "8h",
            "7d",
            "2w",
            "1h30m",
            "1.5h",
            "0.25d",
            "2w3d4h5m6s7ms8us9ns",
            "250ms",
            "10µs",
            "10us",
            "7ns",
            "0s",
            "1m0.5s",
            "",
            "soon",
            "1",
            "h",
            "1.h",
            ".5h",
            "1hh",
            "-1s",
            "+1s",
            "1 h",
            "1y",
            "1H",
            "1e3s",
            "1,5h",
            "PT1H",
            "1h ",
            " 1h",
        ];
        for value in table {
            assert_eq!(
                pattern.is_match(value),
                parse_duration(value).is_some(),
                "pattern and parser disagree on {value:?}"
            );
        }
    }
}
