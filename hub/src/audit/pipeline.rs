//! The hub's audit log: accepts records (from agents' Results and from the hub itself) into
//! the durable [`Queue`], and runs one shipper per sink that delivers them in order, retrying
//! with backoff until the sink has them.

use std::{sync::Arc, time::Duration};

use dbprov_contract::audit::AuditRecord;

use super::{
    queue::{Queue, QueueError, ReadPosition, WhenFull},
    sink::{FailureKind, Sink},
};

/// How a sink is shipped to.
#[derive(Debug, Clone)]
pub struct Shipping {
    /// Records in one delivery.
    pub batch_size: usize,
    /// Records the sink may fall behind before `when_full` applies.
    pub buffer_records: u64,
    /// What a full buffer does.
    pub when_full: WhenFull,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

/// The audit log of this hub. Cheap to clone; `disabled()` when no sink is configured.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    queue: Option<Queue>,
    sinks: Vec<String>,
}

impl AuditLog {
    /// No audit log: records are counted and logged at debug level, nothing is kept.
    pub fn disabled() -> Self {
        Self {
            queue: None,
            sinks: Vec::new(),
        }
    }

    /// Creates every audit series (at 0, or the queue's depths): call once the metrics
    /// recorder is installed, so that `/metrics` lists them from the start and alerts on
    /// `increase()` see the first failure.
    pub fn publish_metrics(&self) {
        if let Some(q) = &self.queue {
            register_metrics(self.sinks.iter().map(String::as_str));
            q.publish_metrics();
        }
    }

    /// Opens the queue in `dir` and starts a shipper per sink (ending when `stop` does).
    pub fn start(
        dir: &std::path::Path,
        sinks: Vec<(Arc<dyn Sink>, Shipping)>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Self, QueueError> {
        let names: Vec<_> = sinks
            .iter()
            .map(|(s, sh)| (s.name().to_owned(), sh.buffer_records, sh.when_full))
            .collect();
        let queue = Queue::open(dir, &names)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        for (sink, shipping) in sinks {
            let q = queue.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move { ship(q, sink, shipping, stop).await });
        }
        Ok(Self {
            queue: Some(queue),
            sinks: names.into_iter().map(|(name, _, _)| name).collect(),
        })
    }

    /// Whether records are kept and shipped.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Keeps `records` (durably, synced) for every sink; those already known by id are kept
    /// once. Returns how many records this call handed in.
    pub async fn accept(&self, records: Vec<AuditRecord>) -> Result<usize, QueueError> {
        match &self.queue {
            Some(q) => q.append(records).await,
            None => {
                for r in &records {
                    tracing::debug!(target: "dbprov::audit", id = %r.id, operation = %r.operation, outcome = r.outcome.as_str(), "audit record (no sink configured)");
                }
                Ok(0)
            }
        }
    }

    /// Why new operations must wait: a `whenFull: block` sink whose buffer is full.
    pub fn blocked(&self) -> Option<String> {
        let (sink, depth, limit) = self.queue.as_ref()?.blocked()?;
        Some(format!(
            "the audit sink {sink:?} has {depth} undelivered records, its bufferRecords limit is {limit} and whenFull is block: new operations wait until it delivers (see dbprov_audit_sink_up and the hub's log for why it does not)"
        ))
    }

    /// The newest `n` records still on disk.
    pub fn last(&self, n: usize) -> Result<Vec<AuditRecord>, QueueError> {
        match &self.queue {
            Some(q) => q.last(n),
            None => Ok(Vec::new()),
        }
    }
}

/// Creates the counters at zero.
fn register_metrics<'a>(sinks: impl Iterator<Item = &'a str>) {
    for name in [
        "dbprov_audit_records_total",
        "dbprov_audit_records_duplicate_total",
        "dbprov_audit_queue_errors_total",
        "dbprov_audit_records_unreadable_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for sink in sinks {
        for name in [
            "dbprov_audit_records_shipped_total",
            "dbprov_audit_records_dropped_total",
        ] {
            metrics::counter!(name, "sink" => sink.to_owned()).increment(0);
        }
        for kind in FailureKind::ALL {
            metrics::counter!("dbprov_audit_records_retried_total", "sink" => sink.to_owned(), "reason" => kind.as_str())
                .increment(0);
        }
    }
}

async fn ship(
    queue: Queue,
    sink: Arc<dyn Sink>,
    shipping: Shipping,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = sink.name().to_owned();
    let mut pos = ReadPosition::default();
    let mut backoff = Duration::from_millis(500);
    metrics::gauge!("dbprov_audit_sink_up", "sink" => name.clone()).set(1.0);
    loop {
        if *stop.borrow() {
            return;
        }
        let notified = queue.notified();
        let batch = match queue.read(&name, &mut pos, shipping.batch_size.max(1)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot read the audit queue");
                pos = ReadPosition::default();
                Vec::new()
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = notified => {}
                _ = stop.changed() => {}
                // A dropOldest cursor move or a read error: look again now and then.
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let Some(last) = batch.last().map(|q| q.seq) else {
            continue;
        };
        let records: Vec<AuditRecord> = batch.into_iter().map(|q| q.record).collect();
        let started = std::time::Instant::now();
        let sent = sink.send(&records).await;
        metrics::histogram!("dbprov_audit_sink_latency_seconds", "sink" => name.clone())
            .record(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => {
                metrics::counter!("dbprov_audit_records_shipped_total", "sink" => name.clone())
                    .increment(records.len() as u64);
                metrics::gauge!("dbprov_audit_sink_up", "sink" => name.clone()).set(1.0);
                backoff = Duration::from_millis(500);
                if let Err(e) = queue.delivered(&name, last) {
                    // Delivered, but the cursor did not move: the batch goes again after a
                    // restart (a duplicate, never a loss).
                    tracing::error!(sink = %name, error = %e, "cannot record an audit delivery");
                }
            }
            Err(e) => {
                metrics::counter!("dbprov_audit_records_retried_total", "sink" => name.clone(), "reason" => e.metric_label())
                    .increment(records.len() as u64);
                metrics::gauge!("dbprov_audit_sink_up", "sink" => name.clone()).set(0.0);
                if e.is_retryable() {
                    tracing::warn!(sink = %name, error = %e, records = records.len(), retry_in = ?backoff, "audit delivery failed; retrying");
                } else {
                    // Not dropped: the records wait (and count against the buffer) until
                    // the configuration or the server is fixed.
                    tracing::error!(sink = %name, error = %e, records = records.len(), retry_in = ?backoff, "audit delivery refused; fix the sink, the records wait for it");
                }
                // Read again from the cursor after the pause (a dropOldest move may have
                // skipped part of this batch meanwhile).
                pos = ReadPosition::default();
                let pause = backoff + Duration::from_millis(fastrand::u64(0..250));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(shipping.max_backoff.max(Duration::from_secs(1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::audit::sink::SinkError;

    /// A sink that fails while `down` is set and remembers what it got.
    #[derive(Debug, Default)]
    struct Flaky {
        down: Mutex<bool>,
        got: Mutex<Vec<String>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async move {
                if *self.down.lock().unwrap() {
                    return Err(SinkError::Retryable {
                        sink: "flaky".into(),
                        kind: FailureKind::Connect,
                        message: "down".into(),
                    });
                }
                self.got
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(|r| r.id.clone()));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn records_wait_for_a_sink_that_is_down_and_arrive_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Flaky::default());
        *sink.down.lock().unwrap() = true;
        let log = AuditLog::start(
            dir.path(),
            vec![(
                sink.clone() as Arc<dyn Sink>,
                Shipping {
                    batch_size: 2,
                    buffer_records: 100,
                    when_full: WhenFull::Block,
                    max_backoff: Duration::from_secs(1),
                },
            )],
            std::future::pending(),
        )
        .unwrap();
        let records: Vec<_> = (0..5)
            .map(|i| super::super::queue::tests_support::record(&i.to_string()))
            .collect();
        log.accept(records.clone()).await.unwrap();
        // Re-sent records are kept once (the sink gets each once, below).
        log.accept(records).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sink.got.lock().unwrap().is_empty());
        *sink.down.lock().unwrap() = false;
        for _ in 0..100 {
            if sink.got.lock().unwrap().len() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(*sink.got.lock().unwrap(), vec!["0", "1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn a_full_block_sink_says_why_operations_wait() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Flaky::default());
        *sink.down.lock().unwrap() = true;
        let log = AuditLog::start(
            dir.path(),
            vec![(
                sink.clone() as Arc<dyn Sink>,
                Shipping {
                    batch_size: 10,
                    buffer_records: 2,
                    when_full: WhenFull::Block,
                    max_backoff: Duration::from_secs(1),
                },
            )],
            std::future::pending(),
        )
        .unwrap();
        assert!(log.blocked().is_none());
        let records: Vec<_> = (0..2)
            .map(|i| super::super::queue::tests_support::record(&i.to_string()))
            .collect();
        log.accept(records).await.unwrap();
        let why = log.blocked().expect("blocked");
        assert!(why.contains("\"flaky\" has 2 undelivered records"), "{why}");
        *sink.down.lock().unwrap() = false;
        for _ in 0..100 {
            if log.blocked().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(log.blocked().is_none());
    }
}
