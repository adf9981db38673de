//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: with several hub replicas exactly one reconciles and accepts agent streams; the
//! others stand by (their gRPC port answers `UNAVAILABLE`, so agents move on).
//!
//! Three durations (all on each replica's own monotonic clock):
//! - `lease_duration`: a standby takes the Lease only after it has *observed* no change of
//!   the Lease record (holder, renewTime, acquireTime, leaseTransitions, resourceVersion) for
//!   this long. It never compares the holder's `renewTime` with its own clock, so clock skew
//!   between machines does not matter (only a difference in clock *rate* would).
//! - `renew_deadline` (< `lease_duration`): the leader stops dispatching as soon as this long
//!   has passed since the start of its last successful renewal — by a timer, not by waiting
//!   for a request to fail, so a stalled apiserver cannot keep it leading.
//! - `retry_period` (< `renew_deadline`): how often the leader renews and standbys poll.
//!
//! Why there are never two leaders: the leader's last successful write started at `t0` (its
//! clock); it stops dispatching at `t0 + renew_deadline`. That write was committed after
//! `t0`, so any standby saw that record at some `t_obs >= t0` and cannot write before
//! `t_obs + lease_duration >= t0 + lease_duration`. Every write is a compare-and-swap on
//! the resourceVersion the writer read, so a standby whose view is stale gets a conflict
//! instead of the Lease. The old leader has therefore stopped `lease_duration -
//! renew_deadline` (5 s with the defaults) before a successor can start, as long as the two
//! clocks run at rates within `lease_duration / renew_deadline` of each other.
//!
//! On shutdown the leader first stops dispatching, then clears `holderIdentity` (client-go's
//! `ReleaseOnCancel`), so a standby takes over at its next poll instead of a lease later.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

/// The three durations of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without an observed change.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Interval between renewals (leader) and attempts (standby).
    pub retry_period: Duration,
}

/// Durations that cannot give a safe election.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    /// The renew deadline must end before the Lease could be taken.
    #[error(
        "--renew-deadline-seconds ({renew:?}) must be shorter than --lease-duration-seconds \
         ({lease:?}): the leader must stop before a standby can take over"
    )]
    RenewNotShorter {
        /// Renew deadline.
        renew: Duration,
        /// Lease duration.
        lease: Duration,
    },
    /// A leader must be able to retry within its deadline.
    #[error(
        "--retry-period-seconds ({retry:?}) must be shorter than --renew-deadline-seconds \
         ({renew:?}) so that a failed renewal is retried before the deadline"
    )]
    RetryNotShorter {
        /// Retry period.
        retry: Duration,
        /// Renew deadline.
        renew: Duration,
    },
    /// Zero durations.
    #[error(
        "--lease-duration-seconds, --renew-deadline-seconds and --retry-period-seconds must be positive"
    )]
    Zero,
}

impl Timing {
    /// Client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub const DEFAULT: Self = Self {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// Checks `renew_deadline < lease_duration` and `retry_period < renew_deadline`; a
    /// missing renew deadline or retry period keeps the defaults' proportions (2/3 and 2/15
    /// of the lease), so `--lease-duration-seconds` alone stays valid.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, TimingError> {
        let renew_deadline = renew_deadline.unwrap_or(lease_duration * 2 / 3);
        let retry_period = retry_period.unwrap_or(lease_duration * 2 / 15);
        if lease_duration.is_zero() || renew_deadline.is_zero() || retry_period.is_zero() {
            return Err(TimingError::Zero);
        }
        if renew_deadline >= lease_duration {
            return Err(TimingError::RenewNotShorter {
                renew: renew_deadline,
                lease: lease_duration,
            });
        }
        if retry_period >= renew_deadline {
            return Err(TimingError::RetryNotShorter {
                retry: retry_period,
                renew: renew_deadline,
            });
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// Bound of one apiserver request of the election (the leader's requests are further
    /// bounded by its renew deadline).
    pub fn request_timeout(&self) -> Duration {
        self.renew_deadline
    }
}

/// How to hold the Lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name + a random suffix).
    pub identity: String,
    /// Durations.
    pub timing: Timing,
}

/// The parts of a Lease whose change proves its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Record {
    resource_version: Option<String>,
    holder: String,
    lease_duration_seconds: Option<i32>,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions,
        }
    }
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No Lease yet: create this one, holding it.
    Create(Lease),
    /// Write this Lease (taking or renewing it); it carries the resourceVersion that was
    /// read, so the write fails with a conflict if anyone wrote in between.
    Write(Lease),
    /// Someone else holds a Lease that has changed within its duration.
    Follow {
        /// Its holder.
        holder: String,
        /// How long until it may be taken if nothing changes.
        expires_in: Duration,
    },
}

/// The election's state machine: pure, every instant is passed in, so tests drive it with
/// any clock.
#[derive(Debug, Clone)]
pub struct Elector {
    name: String,
    namespace: String,
    identity: String,
    timing: Timing,
    /// The last record seen and when (our clock) it was first seen as it is.
    observed: Option<(Record, Instant)>,
    /// While leading: the start of the last successful write, and what it wrote.
    renewed: Option<(Instant, Lease)>,
}

impl Elector {
    /// A candidate that has seen nothing yet.
    pub fn new(cfg: &LeaseConfig) -> Self {
        Self {
            name: cfg.name.clone(),
            namespace: cfg.namespace.clone(),
            identity: cfg.identity.clone(),
            timing: cfg.timing,
            observed: None,
            renewed: None,
        }
    }

    /// Records `current` as seen at `now` (the observation time restarts when the record
    /// changed) and decides what to do, writing `wall` as the renew/acquire time.
    pub fn plan(&mut self, current: Option<&Lease>, now: Instant, wall: Timestamp) -> Action {
        let Some(current) = current else {
            self.observed = None;
            return Action::Create(Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(&Record::default(), wall)),
            });
        };
        let record = Record::of(current);
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.observed = Some((record.clone(), seen_at));
        if !record.holder.is_empty() && record.holder != self.identity {
            // The holder's own duration (client-go): it is the holder whose renew deadline
            // is shorter than it.
            let duration = record
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(self.timing.lease_duration, Duration::from_secs);
            let expires = seen_at + duration;
            if now < expires {
                return Action::Follow {
                    holder: record.holder,
                    expires_in: expires - now,
                };
            }
        }
        let mut lease = current.clone();
        lease.spec = Some(self.spec(&record, wall));
        Action::Write(lease)
    }

    fn spec(&self, previous: &Record, wall: Timestamp) -> LeaseSpec {
        let renewing = previous.holder == self.identity;
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: if renewing {
                previous.acquire_time.clone()
            } else {
                Some(MicroTime(wall))
            },
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(match previous.transitions {
                Some(t) if !renewing => t.saturating_add(1),
                Some(t) => t,
                None => 0,
            }),
            ..Default::default()
        }
    }

    /// A write that started at `started` succeeded with `written`: we lead until
    /// `started + renew_deadline` unless renewed again.
    pub fn renewed(&mut self, started: Instant, written: Lease, now: Instant) {
        self.observed = Some((Record::of(&written), now));
        self.renewed = Some((started, written));
    }

    /// When leadership ends without another successful renewal (None: not leading).
    pub fn deadline(&self) -> Option<Instant> {
        self.renewed
            .as_ref()
            .map(|(started, _)| *started + self.timing.renew_deadline)
    }

    /// Whether we lead at `now`.
    pub fn leads(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// Leadership ended; returns the Lease last written, for a release.
    pub fn stepped_down(&mut self) -> Option<Lease> {
        self.renewed.take().map(|(_, lease)| lease)
    }

    /// The Lease that gives up `held` (what we last wrote): no holder, one-second duration,
    /// same transitions, same resourceVersion (a conflict means someone else holds it now,
    /// and then there is nothing to release).
    pub fn release(held: &Lease, wall: Timestamp) -> Lease {
        let mut lease = held.clone();
        let transitions = held.spec.as_ref().and_then(|s| s.lease_transitions);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: transitions,
            ..Default::default()
        });
        lease
    }
}

/// Why a Lease request failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone wrote the Lease since it was read (or created it first).
    #[error("the Lease changed since it was read")]
    Conflict,
    /// The apiserver refused or failed.
    #[error("{0}")]
    Api(String),
    /// No answer in time.
    #[error("the apiserver did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where the Lease lives: the apiserver, or a fake in tests.
pub trait LeaseStore: Send + Sync {
    /// Reads the Lease.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;
    /// Creates it.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Replaces it if its resourceVersion is still the one in `lease`.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
}

/// The Lease in the apiserver.
#[derive(Clone)]
pub struct KubeLeases {
    api: Api<Lease>,
    name: String,
}

impl std::fmt::Debug for KubeLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLeases")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KubeLeases {
    /// Lease `namespace/name` through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }
}

fn store_error(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict,
        e => StoreError::Api(e.to_string()),
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.api.get_opt(&self.name).await.map_err(store_error)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.api
            .create(&PostParams::default(), lease)
            .await
            .map_err(store_error)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map_err(store_error)
    }
}

async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
}

/// The result of one attempt.
enum Round {
    /// We hold the Lease; the write started at this instant.
    Held(Instant, Box<Lease>),
    /// Someone else holds it.
    Follow(String, Duration),
}

async fn round<S: LeaseStore>(
    store: &S,
    elector: &mut Elector,
    limit: Duration,
) -> Result<Round, StoreError> {
    let started = Instant::now();
    let current = bounded(limit, store.get()).await?;
    let written = match elector.plan(current.as_ref(), Instant::now(), Timestamp::now()) {
        Action::Follow { holder, expires_in } => return Ok(Round::Follow(holder, expires_in)),
        Action::Create(lease) => bounded(limit, store.create(&lease)).await?,
        Action::Write(lease) => bounded(limit, store.replace(&lease)).await?,
    };
    Ok(Round::Held(started, Box::new(written)))
}

fn set_leader_metric(leading: bool) {
    metrics::gauge!("dbprov_hub_leader").set(if leading { 1.0 } else { 0.0 });
}

/// Campaigns for, holds and gives up the Lease until `shutdown` completes. `leading` is true
/// exactly while this replica may dispatch; `on_stopped` runs right after it turns false
/// (closing agent sessions), before anything else happens — in particular before the Lease
/// is released on shutdown. On shutdown the release also waits (at most a renew deadline)
/// for `quiesced`: the work of the last term has stopped, so a successor that takes the
/// released Lease at once finds nothing of it still running. A replica that loses the Lease
/// stays a standby and campaigns again.
pub async fn run<S: LeaseStore>(
    store: S,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    on_stopped: impl Fn() + Send,
    quiesced: impl Future<Output = ()> + Send,
    shutdown: impl Future<Output = ()> + Send,
) {
    let lease_name = format!("{}/{}", cfg.namespace, cfg.name);
    let timing = cfg.timing;
    let mut elector = Elector::new(&cfg);
    set_leader_metric(false);
    tokio::pin!(shutdown);
    tokio::pin!(quiesced);
    let mut last_follow = String::new();
    loop {
        // Standby: poll every retry period (with a little jitter so that candidates do not
        // collide on every attempt) until the Lease is ours.
        loop {
            let attempt = tokio::select! {
                () = &mut shutdown => return,
                r = round(&store, &mut elector, timing.request_timeout()) => r,
            };
            match attempt {
                Ok(Round::Held(started, written)) => {
                    elector.renewed(started, *written, Instant::now());
                    if elector.leads(Instant::now()) {
                        break;
                    }
                    // Acquired too slowly to lead safely: the next round renews it.
                    elector.stepped_down();
                }
                Ok(Round::Follow(holder, expires_in)) => {
                    // Once per holder: a standby polls every retry period.
                    if holder != last_follow {
                        tracing::info!(lease = %lease_name, %holder, ?expires_in, "standing by; the Lease is held");
                        last_follow = holder;
                    }
                }
                Err(StoreError::Conflict) => {
                    tracing::debug!(lease = %lease_name, "another replica wrote the Lease first");
                }
                Err(e) => tracing::warn!(lease = %lease_name, error = %e, "Lease attempt failed"),
            }
            let jitter = timing.retry_period.mul_f64(0.2 * fastrand::f64());
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(timing.retry_period + jitter) => {}
            }
        }
        tracing::info!(lease = %lease_name, identity = %cfg.identity, "became the leader");
        last_follow.clear();
        set_leader_metric(true);
        let _ = leading.send(true);

        // Leading: renew every retry period; stop dispatching the moment the renew deadline
        // passes without a success, whatever state the request is in.
        enum End {
            Deadline,
            Lost(String),
            Shutdown,
        }
        let end = loop {
            let Some(deadline) = elector.deadline() else {
                break End::Deadline;
            };
            let renew = async {
                tokio::time::sleep(timing.retry_period).await;
                let left = deadline.saturating_duration_since(Instant::now());
                round(&store, &mut elector, left.min(timing.request_timeout())).await
            };
            let outcome = tokio::select! {
                biased;
                () = &mut shutdown => break End::Shutdown,
                () = tokio::time::sleep_until(deadline) => break End::Deadline,
                r = renew => r,
            };
            match outcome {
                Ok(Round::Held(started, written)) => {
                    elector.renewed(started, *written, Instant::now());
                }
                Ok(Round::Follow(holder, _)) => break End::Lost(holder),
                Err(e) => {
                    tracing::warn!(lease = %lease_name, error = %e, "renewing the Lease failed; retrying until the renew deadline");
                }
            }
        };
        let _ = leading.send(false);
        on_stopped();
        set_leader_metric(false);
        let held = elector.stepped_down();
        match end {
            End::Deadline => tracing::warn!(
                lease = %lease_name,
                renew_deadline = ?timing.renew_deadline,
                "stopped leading: the Lease was not renewed within the renew deadline; standing by"
            ),
            End::Lost(holder) => tracing::warn!(
                lease = %lease_name,
                %holder,
                "stopped leading: another replica holds the Lease; standing by"
            ),
            End::Shutdown => {
                tracing::info!(lease = %lease_name, "stopped leading: shutting down");
                if held.is_some()
                    && tokio::time::timeout(timing.request_timeout(), &mut quiesced)
                        .await
                        .is_err()
                {
                    tracing::warn!(lease = %lease_name, "the last term's work had not stopped within the renew deadline; releasing the Lease anyway");
                }
                if let Some(held) = held {
                    let released = Elector::release(&held, Timestamp::now());
                    match bounded(timing.request_timeout(), store.replace(&released)).await {
                        Ok(_) => tracing::info!(lease = %lease_name, "released the Lease"),
                        Err(e) => tracing::warn!(
                            lease = %lease_name,
                            error = %e,
                            "could not release the Lease; a standby takes it after its duration"
                        ),
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    const T: Timing = Timing::DEFAULT;

    fn cfg(identity: &str, timing: Timing) -> LeaseConfig {
        LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: identity.into(),
            timing,
        }
    }

    fn wall(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A Lease as the apiserver returns it, with a resourceVersion.
    fn stored(holder: &str, renewed: &str, rv: u64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(wall(renewed))),
                acquire_time: Some(MicroTime(wall(renewed))),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(3),
                ..Default::default()
            }),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn timing_defaults_keep_client_go_proportions_and_refuse_unsafe_values() {
        assert_eq!(Timing::new(secs(15), None, None), Ok(T));
        let t = Timing::new(secs(3), None, None).unwrap();
        assert_eq!(t.renew_deadline, secs(2));
        assert_eq!(t.retry_period, Duration::from_millis(400));
        assert!(matches!(
            Timing::new(secs(15), Some(secs(15)), None),
            Err(TimingError::RenewNotShorter { .. })
        ));
        assert!(matches!(
            Timing::new(secs(15), Some(secs(10)), Some(secs(10))),
            Err(TimingError::RetryNotShorter { .. })
        ));
        let msg = Timing::new(secs(15), Some(secs(20)), None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("--renew-deadline-seconds"), "{msg}");
    }

    #[test]
    fn a_standby_waits_a_lease_duration_of_its_own_time_after_the_last_change() {
        let mut e = Elector::new(&cfg("a", T));
        let t0 = Instant::now();
        let now_wall = wall("2026-11-26T12:00:00Z");
        let lease = stored("b", "2026-11-26T12:00:00Z", 7);
        // Seen for the first time: a full duration from now, whatever renewTime says.
        assert_eq!(
            e.plan(Some(&lease), t0, now_wall),
            Action::Follow {
                holder: "b".into(),
                expires_in: secs(15)
            }
        );
        // Unchanged 14 s later: still held.
        assert!(matches!(
            e.plan(Some(&lease), t0 + secs(14), now_wall),
            Action::Follow { .. }
        ));
        // A renewal (new renewTime and resourceVersion) restarts the wait.
        let renewed = stored("b", "2026-11-26T12:00:10Z", 8);
        assert_eq!(
            e.plan(Some(&renewed), t0 + secs(14), now_wall),
            Action::Follow {
                holder: "b".into(),
                expires_in: secs(15)
            }
        );
        // Unchanged for a full duration: take it, with a compare-and-swap on rv 8.
        match e.plan(Some(&renewed), t0 + secs(29), now_wall) {
            Action::Write(l) => {
                assert_eq!(l.metadata.resource_version.as_deref(), Some("8"));
                let spec = l.spec.unwrap();
                assert_eq!(spec.holder_identity.as_deref(), Some("a"));
                assert_eq!(spec.lease_transitions, Some(4));
                assert_eq!(spec.acquire_time, Some(MicroTime(now_wall)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clock_skew_between_machines_changes_nothing() {
        // The holder's clock is an hour behind ours: the old rule (renewTime + duration <
        // our now) would take a live Lease at once; observed time does not.
        let t0 = Instant::now();
        let ours = wall("2026-11-26T13:00:00Z");
        let mut e = Elector::new(&cfg("a", T));
        let behind = stored("b", "2026-11-26T12:00:00Z", 1);
        assert!(matches!(
            e.plan(Some(&behind), t0, ours),
            Action::Follow { .. }
        ));
        let behind2 = stored("b", "2026-11-26T12:00:02Z", 2);
        assert!(matches!(
            e.plan(Some(&behind2), t0 + secs(2), ours),
            Action::Follow { .. }
        ));
        // The holder's clock is a day ahead: the old rule would never take a dead Lease;
        // observed time takes it a duration after it stopped changing.
        let mut e = Elector::new(&cfg("a", T));
        let ahead = stored("b", "2026-11-27T13:00:00Z", 1);
        assert!(matches!(
            e.plan(Some(&ahead), t0, ours),
            Action::Follow { .. }
        ));
        assert!(matches!(
            e.plan(Some(&ahead), t0 + secs(15), ours),
            Action::Write(_)
        ));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_a_missing_one_created() {
        let t0 = Instant::now();
        let now_wall = wall("2026-11-26T12:00:00Z");
        let mut e = Elector::new(&cfg("a", T));
        match e.plan(None, t0, now_wall) {
            Action::Create(l) => {
                let spec = l.spec.unwrap();
                assert_eq!(spec.holder_identity.as_deref(), Some("a"));
                assert_eq!(spec.lease_transitions, Some(0));
                assert_eq!(spec.lease_duration_seconds, Some(15));
            }
            other => panic!("{other:?}"),
        }
        let held = stored("b", "2026-11-26T12:00:00Z", 5);
        let released = Elector::release(&held, now_wall);
        assert_eq!(
            released.metadata.resource_version.as_deref(),
            Some("5"),
            "the release is a compare-and-swap"
        );
        let spec = released.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(spec.lease_transitions, Some(3));
        assert!(matches!(
            e.plan(Some(&released), t0, now_wall),
            Action::Write(_)
        ));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mut e = Elector::new(&cfg("a", T));
        let mine = stored("a", "2026-11-26T12:00:00Z", 9);
        match e.plan(Some(&mine), t0, wall("2026-11-26T12:00:02Z")) {
            Action::Write(l) => {
                let spec = l.spec.unwrap();
                assert_eq!(spec.lease_transitions, Some(3));
                assert_eq!(
                    spec.acquire_time,
                    Some(MicroTime(wall("2026-11-26T12:00:00Z")))
                );
                assert_eq!(
                    spec.renew_time,
                    Some(MicroTime(wall("2026-11-26T12:00:02Z")))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_leader_stops_before_any_standby_may_take_over() {
        // The leader's last successful write starts at t0; the standby sees its result at
        // any later instant. Whatever the order, the leader's deadline comes first, by at
        // least lease_duration - renew_deadline.
        let t0 = Instant::now();
        let mut leader = Elector::new(&cfg("a", T));
        let written = stored("a", "2026-11-26T12:00:00Z", 2);
        leader.renewed(t0, written.clone(), t0 + Duration::from_millis(30));
        let stop = leader.deadline().unwrap();
        assert!(leader.leads(stop - Duration::from_millis(1)));
        assert!(!leader.leads(stop));
        for seen_after_ms in [0u64, 10, 500, 9_999, 30_000] {
            let seen = t0 + Duration::from_millis(seen_after_ms);
            let mut standby = Elector::new(&cfg("b", T));
            let expires_in = match standby.plan(Some(&written), seen, wall("2026-11-26T12:00:00Z"))
            {
                Action::Follow { expires_in, .. } => expires_in,
                other => panic!("{other:?}"),
            };
            let earliest_takeover = seen + expires_in;
            assert!(
                stop + (T.lease_duration - T.renew_deadline) <= earliest_takeover,
                "seen after {seen_after_ms} ms"
            );
        }
        assert_eq!(leader.stepped_down(), Some(written));
        assert_eq!(leader.deadline(), None);
    }

    // ---- the async loop against an in-memory apiserver ----

    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Wrote(String, String),
        Stopped(String),
        Leading(String),
    }

    #[derive(Default)]
    struct Shared {
        lease: Option<Lease>,
        rv: u64,
        events: Vec<Event>,
    }

    /// One replica's connection to a shared in-memory Lease; `stalled` makes every request
    /// hang (a blackholed apiserver).
    #[derive(Clone)]
    struct FakeStore {
        shared: Arc<Mutex<Shared>>,
        stalled: Arc<AtomicBool>,
    }

    impl FakeStore {
        async fn stall_point(&self) {
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }

        fn store(&self, mut lease: Lease, expect: Option<&str>) -> Result<Lease, StoreError> {
            let mut s = self.shared.lock().unwrap();
            let current = s
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if current.as_deref() != expect {
                return Err(StoreError::Conflict);
            }
            s.rv += 1;
            lease.metadata.resource_version = Some(s.rv.to_string());
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            let rv = s.rv.to_string();
            s.events.push(Event::Wrote(holder, rv));
            s.lease = Some(lease.clone());
            Ok(lease)
        }
    }

    impl LeaseStore for FakeStore {
        async fn get(&self) -> Result<Option<Lease>, StoreError> {
            self.stall_point().await;
            Ok(self.shared.lock().unwrap().lease.clone())
        }

        async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
            self.stall_point().await;
            self.store(lease.clone(), None)
        }

        async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
            self.stall_point().await;
            let expect = lease.metadata.resource_version.clone();
            self.store(lease.clone(), expect.as_deref())
        }
    }

    struct Replica {
        store: FakeStore,
        leading: watch::Receiver<bool>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn replica(shared: &Arc<Mutex<Shared>>, id: &str, timing: Timing) -> Replica {
        replica_quiescing(shared, id, timing, std::future::ready(()))
    }

    fn replica_quiescing(
        shared: &Arc<Mutex<Shared>>,
        id: &str,
        timing: Timing,
        quiesced: impl Future<Output = ()> + Send + 'static,
    ) -> Replica {
        let store = FakeStore {
            shared: shared.clone(),
            stalled: Arc::new(AtomicBool::new(false)),
        };
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let events = shared.clone();
        let who = id.to_owned();
        let mut watch_leading = leading.clone();
        let recorder = shared.clone();
        let who2 = id.to_owned();
        // Records when this replica starts leading, as the dispatching side sees it.
        tokio::spawn(async move {
            while watch_leading.changed().await.is_ok() {
                if *watch_leading.borrow_and_update() {
                    recorder
                        .lock()
                        .unwrap()
                        .events
                        .push(Event::Leading(who2.clone()));
                }
            }
        });
        let task = tokio::spawn(run(
            store.clone(),
            cfg(id, timing),
            tx,
            move || {
                events
                    .lock()
                    .unwrap()
                    .events
                    .push(Event::Stopped(who.clone()))
            },
            quiesced,
            async move {
                let _ = stopped.await;
            },
        ));
        Replica {
            store,
            leading,
            stop: Some(stop),
            task,
        }
    }

    // Short, with a wide gap between renew deadline and lease so that a loaded test machine
    // does not blur the order the tests check.
    fn quick() -> Timing {
        Timing::new(
            Duration::from_millis(1500),
            Some(Duration::from_millis(500)),
            Some(Duration::from_millis(50)),
        )
        .unwrap()
    }

    async fn until_leading(r: &mut Replica) {
        r.leading.wait_for(|l| *l).await.unwrap();
    }

    fn holder(shared: &Arc<Mutex<Shared>>) -> String {
        shared
            .lock()
            .unwrap()
            .lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_stalled_leader_stops_before_the_standby_leads_and_then_stays_standby() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = replica(&shared, "a", quick());
        until_leading(&mut a).await;
        let mut b = replica(&shared, "b", quick());
        // b polls and follows while a renews.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!*b.leading.borrow());
        assert!(*a.leading.borrow());

        a.store.stalled.store(true, Ordering::SeqCst);
        until_leading(&mut b).await;
        assert!(!*a.leading.borrow(), "a still leads while b leads");
        let events = shared.lock().unwrap().events.clone();
        let stopped = events
            .iter()
            .position(|e| *e == Event::Stopped("a".into()))
            .expect("a stopped");
        let b_took = events
            .iter()
            .position(|e| matches!(e, Event::Wrote(h, _) if h == "b"))
            .expect("b wrote");
        assert!(stopped < b_took, "{events:?}");

        // The apiserver answers a again: it sees b's Lease and stays standby.
        a.store.stalled.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!*a.leading.borrow());
        assert!(*b.leading.borrow());
        assert_eq!(holder(&shared), "b");
        for r in [&mut a, &mut b] {
            r.stop.take().unwrap().send(()).unwrap();
        }
        a.task.await.unwrap();
        b.task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_dispatching_then_releases_and_the_standby_takes_over() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = replica(&shared, "a", quick());
        until_leading(&mut a).await;
        let mut b = replica(&shared, "b", quick());
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.stop.take().unwrap().send(()).unwrap();
        a.task.await.unwrap();
        assert!(!*a.leading.borrow());
        {
            let s = shared.lock().unwrap();
            let stopped = s
                .events
                .iter()
                .position(|e| *e == Event::Stopped("a".into()))
                .unwrap();
            let released = s
                .events
                .iter()
                .position(|e| matches!(e, Event::Wrote(h, _) if h.is_empty()))
                .expect("released");
            assert!(stopped < released, "{:?}", s.events);
        }
        until_leading(&mut b).await;
        assert_eq!(holder(&shared), "b");
        b.stop.take().unwrap().send(()).unwrap();
        b.task.await.unwrap();
        assert_eq!(holder(&shared), "", "b released too");
    }

    #[tokio::test]
    async fn on_shutdown_the_lease_is_released_only_once_the_terms_work_has_stopped() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (quiet, quiesced) = tokio::sync::oneshot::channel::<()>();
        let mut a = replica_quiescing(&shared, "a", quick(), async move {
            let _ = quiesced.await;
        });
        until_leading(&mut a).await;
        a.stop.take().unwrap().send(()).unwrap();
        a.leading.wait_for(|l| !*l).await.unwrap();
        // Stopped dispatching, still holding the Lease while the work winds down.
        tokio::task::yield_now().await;
        assert_eq!(holder(&shared), "a");
        quiet.send(()).unwrap();
        a.task.await.unwrap();
        assert_eq!(holder(&shared), "", "released once quiesced");
    }

    #[tokio::test]
    async fn of_several_candidates_one_leads() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut replicas: Vec<Replica> = ["a", "b", "c"]
            .iter()
            .map(|id| replica(&shared, id, quick()))
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let leaders: Vec<bool> = replicas.iter().map(|r| *r.leading.borrow()).collect();
        assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
        let events = shared.lock().unwrap().events.clone();
        let leading: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Leading(_)))
            .collect();
        assert_eq!(leading.len(), 1, "{events:?}");
        for r in &mut replicas {
            r.stop.take().unwrap().send(()).unwrap();
        }
        for r in replicas {
            r.task.await.unwrap();
        }
    }
}
