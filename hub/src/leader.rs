//! Leader election over a `coordination.k8s.io/v1` Lease: with several hub replicas exactly
//! one reconciles and accepts agent streams; the others stand by (their gRPC port answers
//! `UNAVAILABLE`, so agents move on to the next address) and take over once the leader has
//! not renewed the Lease for its duration. A leader that cannot renew within the duration
//! stops (the process exits and is restarted as a standby): two leaders would send the same
//! intents twice.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

/// How to hold the Lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name + a random suffix).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// Decides what to do with `lease` at `now` as `me`.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => renewed.0.as_second() + i64::from(secs) < now.as_second(),
        _ => true,
    };
    if holder.is_empty() || expired {
        Step::TakeOver
    } else {
        Step::Follow(holder.to_owned())
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the Lease now.
    #[error("lost the Lease {0} to {1}")]
    Lost(String, String),
    /// The Lease could not be renewed within its duration.
    #[error("could not renew the Lease {lease} for {after:?}: {last}")]
    RenewFailed {
        /// Lease.
        lease: String,
        /// How long renewal failed.
        after: Duration,
        /// Last error.
        last: String,
    },
}

fn spec(me: &str, cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let taking = previous.and_then(|p| p.holder_identity.as_deref()) != Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if taking {
            Some(MicroTime(now))
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if taking && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..Default::default()
    }
}

/// One round: returns whether we hold the Lease afterwards, and who does.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(bool, String), kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    let step = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        now,
    );
    let write = match (&step, current) {
        (Step::Follow(holder), _) => return Ok((false, holder.clone())),
        (Step::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(&cfg.identity, cfg, None, now)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (_, Some(mut lease)) => {
            // The resourceVersion from the read makes this a compare-and-swap: of two
            // replicas taking an expired Lease at once, one gets 409 Conflict.
            lease.spec = Some(spec(&cfg.identity, cfg, lease.spec.as_ref(), now));
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (_, None) => return Ok((false, String::new())),
    };
    match write {
        Ok(()) => Ok((true, cfg.identity.clone())),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok((false, "another replica".into())),
        Err(e) => Err(e),
    }
}

/// Holds or waits for the Lease forever; `leading` says whether this replica leads. Returns
/// only when leadership, once held, is lost.
pub async fn run(
    client: kube::Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
) -> LeaderError {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    // Renew three times per duration, as client-go does.
    let period = (cfg.duration / 3).max(Duration::from_millis(200));
    let mut renewed = tokio::time::Instant::now();
    let lease = format!("{}/{}", cfg.namespace, cfg.name);
    loop {
        let is_leader = *leading.borrow();
        match round(&api, &cfg).await {
            Ok((true, _)) => {
                renewed = tokio::time::Instant::now();
                if !is_leader {
                    tracing::info!(%lease, identity = %cfg.identity, "became the leader");
                    let _ = leading.send(true);
                }
            }
            Ok((false, holder)) => {
                if is_leader {
                    let _ = leading.send(false);
                    return LeaderError::Lost(lease, holder);
                }
                tracing::debug!(%lease, %holder, "standing by");
            }
            Err(e) => {
                if is_leader && renewed.elapsed() >= cfg.duration {
                    let _ = leading.send(false);
                    return LeaderError::RenewFailed {
                        lease,
                        after: renewed.elapsed(),
                        last: e.to_string(),
                    };
                }
                tracing::warn!(%lease, error = %e, "lease round failed");
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lease(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn a_live_lease_is_followed_an_expired_one_taken_ours_renewed() {
        let now: Timestamp = "2026-11-26T12:00:30Z".parse().unwrap();
        assert_eq!(decide(None, "a", now), Step::Create);
        let live = lease("b", "2026-11-26T12:00:20Z", 15);
        assert_eq!(decide(Some(&live), "a", now), Step::Follow("b".into()));
        assert_eq!(decide(Some(&live), "b", now), Step::Renew);
        let stale = lease("b", "2026-11-26T12:00:10Z", 15);
        assert_eq!(decide(Some(&stale), "a", now), Step::TakeOver);
        let released = lease("", "2026-11-26T12:00:29Z", 15);
        assert_eq!(decide(Some(&released), "a", now), Step::TakeOver);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let cfg = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        let t0: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-26T12:00:05Z".parse().unwrap();
        let taken = spec("a", &cfg, Some(&lease("b", "2026-11-26T11:00:00Z", 15)), t0);
        assert_eq!(taken.lease_transitions, Some(1));
        let renewed = spec("a", &cfg, Some(&taken), t1);
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(1));
    }
}
