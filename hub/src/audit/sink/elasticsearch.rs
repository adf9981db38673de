//! Elasticsearch bulk API. Each record is a `create` with `_id` = record id, so a batch sent
//! again after a lost answer is refused item by item with 409, which counts as delivered:
//! the store keeps each record once. Documents go to a daily index
//! `<indexPrefix>-YYYY.MM.DD` (record time, UTC) or to a data stream, and carry
//! `@timestamp` (the record's time) next to the record's own fields.

use std::{collections::BTreeMap, time::Duration};

use dbprov_contract::audit::AuditRecord;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{
    FailureKind, Sink, SinkError,
    http::{self, Auth},
};
use crate::audit::config::{ConfigError, ElasticsearchConfig};

/// Ships records with the bulk API.
#[derive(Debug)]
pub struct ElasticsearchSink {
    name: String,
    bulk: reqwest::Url,
    target: String,
    client: reqwest::Client,
    auth: Auth,
    target_index: Target,
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Target {
    Daily(String),
    DataStream(String),
}

impl ElasticsearchSink {
    /// An Elasticsearch sink from valid settings; credential and CA files must be readable.
    pub fn new(name: &str, config: &ElasticsearchConfig) -> Result<Self, ConfigError> {
        let mut bulk = reqwest::Url::parse(&config.url).map_err(|e| ConfigError::Build {
            sink: name.to_owned(),
            message: format!("elasticsearch.url: {e}"),
        })?;
        let path = format!("{}/_bulk", bulk.path().trim_end_matches('/'));
        bulk.set_path(&path);
        if !config.query_params.is_empty() {
            bulk.query_pairs_mut().extend_pairs(&config.query_params);
        }
        let auth = match (&config.basic_auth, &config.api_key_file) {
            (Some(b), _) => http::basic_auth(name, "elasticsearch", b)?,
            (None, Some(key)) => {
                http::check_readable(name, "elasticsearch.apiKeyFile", key)?;
                Auth::ApiKey {
                    key_file: key.clone(),
                    field: "elasticsearch.apiKeyFile".into(),
                }
            }
            (None, None) => Auth::None,
        };
        let target_index = match (&config.data_stream, &config.index_prefix) {
            (Some(ds), _) => Target::DataStream(ds.clone()),
            (None, Some(p)) => Target::Daily(p.clone()),
            (None, None) => Target::Daily(ElasticsearchConfig::DEFAULT_INDEX_PREFIX.into()),
        };
        Ok(Self {
            name: name.to_owned(),
            target: http::describe(&bulk),
            client: http::client(
                name,
                "elasticsearch",
                Duration::from_secs(config.timeout_seconds),
                &config.tls,
            )?,
            bulk,
            auth,
            target_index,
            headers: config.headers.clone(),
        })
    }

    /// The NDJSON body of a bulk request for `batch`.
    pub fn body(&self, batch: &[AuditRecord]) -> Vec<u8> {
        bulk_body(&self.target_index, batch)
    }
}

fn index_of(target: &Target, record: &AuditRecord, now: jiff::Timestamp) -> String {
    match target {
        Target::DataStream(ds) => ds.clone(),
        Target::Daily(prefix) => format!(
            "{prefix}-{}",
            super::record_time(record)
                .unwrap_or(now)
                .strftime("%Y.%m.%d")
        ),
    }
}

fn bulk_body(target: &Target, batch: &[AuditRecord]) -> Vec<u8> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::with_capacity(batch.len() * 700);
    for record in batch {
        let action = serde_json::json!({"create": {"_index": index_of(target, record, now), "_id": record.id}});
        let mut doc = serde_json::to_value(record)
            .unwrap_or_else(|_| serde_json::json!({"id": record.id, "time": record.time}));
        if let Some(obj) = doc.as_object_mut() {
            let ts =
                super::record_time(record).map_or_else(|| now.to_string(), |_| record.time.clone());
            obj.insert("@timestamp".into(), serde_json::Value::String(ts));
        }
        out.extend_from_slice(action.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(doc.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[derive(Deserialize, Debug)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Deserialize, Debug)]
struct BulkItem {
    #[serde(default, rename = "_id")]
    id: Option<String>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Reads a 2xx bulk answer: Ok when every item was created or already there (409).
fn check_response(
    sink: &str,
    target: &str,
    batch: &[AuditRecord],
    text: &str,
) -> Result<(), SinkError> {
    let resp: BulkResponse = serde_json::from_str(text).map_err(|e| {
        SinkError::retryable(
            sink,
            FailureKind::Protocol,
            format!(
                "POST {target}: the answer is not a bulk response ({e}): {}; is elasticsearch.url the Elasticsearch base URL?",
                http::excerpt(text)
            ),
        )
    })?;
    if resp.items.len() != batch.len() {
        return Err(SinkError::retryable(
            sink,
            FailureKind::Protocol,
            format!(
                "POST {target}: {} items answered for {} records sent",
                resp.items.len(),
                batch.len()
            ),
        ));
    }
    if !resp.errors {
        return Ok(());
    }
    let mut retry = Vec::new();
    let mut refused = Vec::new();
    for (i, item) in resp.items.iter().enumerate() {
        let Some(item) = item.values().next() else {
            continue;
        };
        let status = item.status;
        // 409: a record with this id is already stored (a re-sent batch): delivered.
        if (200..300).contains(&status) || status == 409 {
            continue;
        }
        let id = item
            .id
            .clone()
            .unwrap_or_else(|| batch.get(i).map(|r| r.id.clone()).unwrap_or_default());
        let (kind, reason) = item
            .error
            .as_ref()
            .map(|e| {
                (
                    e.get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("")
                        .to_owned(),
                    e.get("reason")
                        .and_then(|t| t.as_str())
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .unwrap_or_default();
        let line = format!("record {id}: {status} {kind}: {}", http::excerpt(&reason));
        if status == 429 || status >= 500 || kind == "es_rejected_execution_exception" {
            retry.push(line);
        } else {
            refused.push(line);
        }
    }
    let summarize = |lines: &[String]| {
        let shown: Vec<&str> = lines.iter().take(3).map(String::as_str).collect();
        let more = lines.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} (and {more} more)", shown.join("; "))
        } else {
            shown.join("; ")
        }
    };
    if !refused.is_empty() {
        // Sending them again gets the same answer; the records that were stored stay stored
        // (a later re-send of the batch gets 409 for them).
        return Err(SinkError::permanent(
            sink,
            FailureKind::Rejected,
            format!(
                "POST {target}: {} of {} records refused: {}; fix the index mapping or template of the target (or set indexPrefix/dataStream to one that accepts audit records)",
                refused.len(),
                batch.len(),
                summarize(&refused)
            ),
        ));
    }
    if !retry.is_empty() {
        return Err(SinkError::retryable(
            sink,
            FailureKind::Throttled,
            format!(
                "POST {target}: {} of {} records not stored yet: {}",
                retry.len(),
                batch.len(),
                summarize(&retry)
            ),
        ));
    }
    Ok(())
}

impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let mut req = self
                .client
                .post(self.bulk.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(self.body(batch));
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let req = self.auth.apply(&self.name, req)?;
            let resp = req
                .send()
                .await
                .map_err(|e| http::transport_error(&self.name, &self.target, &e))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| http::transport_error(&self.name, &self.target, &e))?;
            if !status.is_success() {
                return Err(http::status_error(
                    &self.name,
                    &self.target,
                    status,
                    &text,
                    "no bulk endpoint there; set elasticsearch.url to the base URL (the sink appends /_bulk)",
                ));
            }
            check_response(&self.name, &self.target, batch, &text)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::sink::testing::record;
    use dbprov_contract::audit::AuditOutcome;

    fn batch() -> Vec<AuditRecord> {
        vec![
            record("a", "DatabaseUser", AuditOutcome::Success),
            record("b", "Database", AuditOutcome::Failure),
        ]
    }

    #[test]
    fn bulk_body_has_create_actions_with_record_ids_daily_index_and_timestamp() {
        let body =
            String::from_utf8(bulk_body(&Target::Daily("dbprov-audit".into()), &batch())).unwrap();
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            serde_json::json!({"create": {"_index": "dbprov-audit-2026.12.01", "_id": "a"}})
        );
        assert_eq!(lines[1]["@timestamp"], "2026-12-01T10:11:12.345Z");
        assert_eq!(lines[1]["operation"], "ensure_user");
        assert_eq!(lines[3]["resource"]["kind"], "Database");

        let body = String::from_utf8(bulk_body(
            &Target::DataStream("logs-audit".into()),
            &batch(),
        ))
        .unwrap();
        let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
        assert_eq!(first["create"]["_index"], "logs-audit");
    }

    #[test]
    fn conflicts_count_as_delivered() {
        let text = r#"{"errors":true,"items":[{"create":{"_id":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},{"create":{"_id":"b","status":201}}]}"#;
        check_response("es", "http://e/_bulk", &batch(), text).unwrap();
        check_response(
            "es",
            "http://e/_bulk",
            &batch(),
            r#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}"#,
        )
        .unwrap();
    }

    #[test]
    fn item_errors_split_into_retryable_and_permanent_naming_the_record() {
        let text = r#"{"errors":true,"items":[{"create":{"_id":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},{"create":{"_id":"b","status":201}}]}"#;
        let err = check_response("es", "http://e/_bulk", &batch(), text).unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("record a: 429"), "{err}");

        let text = r#"{"errors":true,"items":[{"create":{"_id":"a","status":429}},{"create":{"_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [time]"}}}]}"#;
        let err = check_response("es", "http://e/_bulk", &batch(), text).unwrap_err();
        assert!(!err.is_retryable());
        let msg = err.to_string();
        assert!(msg.contains("audit sink \"es\""), "{msg}");
        assert!(
            msg.contains("record b: 400 mapper_parsing_exception: failed to parse field [time]"),
            "{msg}"
        );
        assert!(msg.contains("fix the index mapping"), "{msg}");
    }

    #[test]
    fn answers_that_are_not_bulk_responses_are_retryable_protocol_errors() {
        let err = check_response("es", "http://e/_bulk", &batch(), "<html>").unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.metric_label(), "protocol");
        let err = check_response(
            "es",
            "http://e/_bulk",
            &batch(),
            r#"{"errors":false,"items":[]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("0 items answered for 2 records"),
            "{err}"
        );
    }
}
