//! Grafana Loki push API (JSON). Every record is one log line (its JSON) in a stream labelled
//! `job="dbprov-audit"`, `cluster`, `kind` (resource kind) and `outcome`, plus the static
//! labels of the config: values that come from a small set, so the number of streams stays
//! bounded. Ids, names and users are in the line, where LogQL's `| json` finds them.

use std::{collections::BTreeMap, time::Duration};

use dbprov_contract::audit::AuditRecord;
use futures::future::BoxFuture;

use super::{
    Sink, SinkError,
    http::{self, Auth},
};
use crate::audit::config::{ConfigError, LokiConfig};

/// The `job` label of every stream.
pub const JOB: &str = "dbprov-audit";

/// Pushes records to Loki.
#[derive(Debug)]
pub struct LokiSink {
    name: String,
    url: reqwest::Url,
    target: String,
    client: reqwest::Client,
    auth: Auth,
    tenant: Option<String>,
    headers: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl LokiSink {
    /// A Loki sink from valid settings; credential and CA files must be readable.
    pub fn new(name: &str, config: &LokiConfig) -> Result<Self, ConfigError> {
        let url = http::parse_url(name, "loki.url", &config.url)?;
        let auth = http::basic_or_bearer(
            name,
            "loki",
            config.basic_auth.as_ref(),
            config.bearer_token_file.as_ref(),
        )?;
        Ok(Self {
            name: name.to_owned(),
            target: http::describe(&url),
            client: http::client(
                name,
                "loki",
                Duration::from_secs(config.timeout_seconds),
                &config.tls,
            )?,
            url,
            auth,
            tenant: config.tenant_id.clone(),
            headers: config.headers.clone(),
            labels: config.labels.clone(),
        })
    }

    /// The push request body for `batch`.
    pub fn body(&self, batch: &[AuditRecord]) -> serde_json::Value {
        push_body(&self.labels, batch)
    }
}

/// Streams in the order their first record appears; lines in queue order within a stream.
fn push_body(extra: &BTreeMap<String, String>, batch: &[AuditRecord]) -> serde_json::Value {
    let mut streams: Vec<(BTreeMap<String, String>, Vec<serde_json::Value>)> = Vec::new();
    let now = jiff::Timestamp::now();
    for record in batch {
        let labels = labels(extra, record);
        let ts = super::record_time(record)
            .unwrap_or(now)
            .as_nanosecond()
            .to_string();
        let value = serde_json::json!([ts, super::record_json(record)]);
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, values)) => values.push(value),
            None => streams.push((labels, vec![value])),
        }
    }
    serde_json::json!({
        "streams": streams
            .into_iter()
            .map(|(stream, values)| serde_json::json!({"stream": stream, "values": values}))
            .collect::<Vec<_>>()
    })
}

/// The bounded label set of a record (an empty value would make Loki drop the label).
fn labels(extra: &BTreeMap<String, String>, record: &AuditRecord) -> BTreeMap<String, String> {
    let or_none = |s: &str| {
        if s.is_empty() {
            "none".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut labels = extra.clone();
    labels.insert("job".into(), JOB.into());
    labels.insert("cluster".into(), or_none(&record.cluster));
    labels.insert("kind".into(), or_none(&record.resource.kind));
    labels.insert("outcome".into(), record.outcome.as_str().into());
    labels
}

impl Sink for LokiSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let body = serde_json::to_vec(&self.body(batch)).unwrap_or_default();
            let mut req = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            if let Some(tenant) = &self.tenant {
                req = req.header("X-Scope-OrgID", tenant);
            }
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let req = self.auth.apply(&self.name, req)?;
            let resp = req
                .send()
                .await
                .map_err(|e| http::transport_error(&self.name, &self.target, &e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            Err(http::status_error(
                &self.name,
                &self.target,
                status,
                &text,
                "no push endpoint there; set loki.url to the push path, e.g. http://loki:3100/loki/api/v1/push",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::sink::testing::record;
    use dbprov_contract::audit::AuditOutcome;

    #[test]
    fn streams_are_grouped_by_the_bounded_labels_and_keep_queue_order() {
        let extra = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let mut b = record("b", "DatabaseUser", AuditOutcome::Failure);
        b.time = "not a time".into();
        let batch = vec![
            record("a", "DatabaseUser", AuditOutcome::Success),
            b,
            record("c", "DatabaseUser", AuditOutcome::Success),
            record("d", "Database", AuditOutcome::Success),
        ];
        let body = push_body(&extra, &batch);
        let streams = body["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 3);
        assert_eq!(
            streams[0]["stream"],
            serde_json::json!({"job": "dbprov-audit", "cluster": "prod-eu", "kind": "DatabaseUser", "outcome": "success", "env": "prod"})
        );
        let values = streams[0]["values"].as_array().unwrap();
        let ids: Vec<String> = values
            .iter()
            .map(|v| {
                serde_json::from_str::<AuditRecord>(v[1].as_str().unwrap())
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(ids, ["a", "c"]);
        // 2026-12-01T10:11:12.345Z in nanoseconds, as a string.
        assert_eq!(values[0][0], "1796119872345000000");
        assert_eq!(streams[1]["stream"]["outcome"], "failure");
        // An unparsable time gets the send time rather than failing the batch.
        assert!(streams[1]["values"][0][0].as_str().unwrap().len() >= 19);
        assert_eq!(streams[2]["stream"]["kind"], "Database");
        // No label carries an id, a name or a user.
        for s in streams {
            let labels = s["stream"].as_object().unwrap();
            assert_eq!(labels.len(), 5);
        }
    }
}
