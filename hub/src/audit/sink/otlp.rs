//! OpenTelemetry logs over OTLP/HTTP (protobuf), for an OpenTelemetry Collector or any
//! backend with an OTLP endpoint. Each record is one LogRecord: the body is the record's
//! JSON, the attributes are the record's fields (nested ones as key-value lists), the time is
//! the record's time, the severity INFO for a success and WARN otherwise.

use std::{collections::BTreeMap, time::Duration};

use dbprov_contract::audit::{AuditOutcome, AuditRecord};
use futures::future::BoxFuture;
use prost::Message as _;

use super::{
    FailureKind, Sink, SinkError,
    http::{self, Auth},
};
use crate::audit::config::{ConfigError, OtlpConfig};

/// The OTLP logs messages this sink sends (opentelemetry/proto/logs/v1, collector/logs/v1),
/// the fields it uses with their numbers.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportLogsPartialSuccess>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_log_records: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(string, tag = "12")]
        pub event_name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(ArrayValue),
        #[prost(message, tag = "6")]
        KvList(KeyValueList),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

/// `event_name` and the instrumentation scope of every record.
pub const EVENT_NAME: &str = "dbprov.audit";

/// Exports records as OTLP logs.
#[derive(Debug)]
pub struct OtlpSink {
    name: String,
    url: reqwest::Url,
    target: String,
    client: reqwest::Client,
    auth: Auth,
    headers: BTreeMap<String, String>,
    resource: Vec<pb::KeyValue>,
}

impl OtlpSink {
    /// An OTLP sink from valid settings; credential and CA files must be readable.
    pub fn new(name: &str, config: &OtlpConfig) -> Result<Self, ConfigError> {
        let url = http::parse_url(name, "otlp.url", &config.url)?;
        let auth = http::basic_or_bearer(
            name,
            "otlp",
            config.basic_auth.as_ref(),
            config.bearer_token_file.as_ref(),
        )?;
        let mut resource = BTreeMap::from([("service.name".to_owned(), "dbprov-hub".to_owned())]);
        resource.extend(config.resource_attributes.clone());
        Ok(Self {
            name: name.to_owned(),
            target: http::describe(&url),
            client: http::client(
                name,
                "otlp",
                Duration::from_secs(config.timeout_seconds),
                &config.tls,
            )?,
            url,
            auth,
            headers: config.headers.clone(),
            resource: resource
                .into_iter()
                .map(|(k, v)| kv(k, pb::Value::String(v)))
                .collect(),
        })
    }

    fn request(&self, batch: &[AuditRecord]) -> pb::ExportLogsServiceRequest {
        let now = jiff::Timestamp::now();
        let nanos = |t: jiff::Timestamp| u64::try_from(t.as_nanosecond()).unwrap_or(0);
        let log_records = batch
            .iter()
            .map(|record| {
                let (severity_number, severity_text) = match record.outcome {
                    AuditOutcome::Success => (9, "INFO"),
                    AuditOutcome::Failure | AuditOutcome::Refused | AuditOutcome::Flagged => {
                        (13, "WARN")
                    }
                };
                let attributes = match serde_json::to_value(record) {
                    Ok(serde_json::Value::Object(fields)) => fields
                        .into_iter()
                        .filter_map(|(k, v)| any_value(v).map(|v| kv(k, v)))
                        .collect(),
                    _ => vec![kv("id".into(), pb::Value::String(record.id.clone()))],
                };
                pb::LogRecord {
                    time_unix_nano: nanos(super::record_time(record).unwrap_or(now)),
                    observed_time_unix_nano: nanos(now),
                    severity_number,
                    severity_text: severity_text.into(),
                    body: Some(pb::AnyValue {
                        value: Some(pb::Value::String(super::record_json(record))),
                    }),
                    attributes,
                    event_name: EVENT_NAME.into(),
                }
            })
            .collect();
        pb::ExportLogsServiceRequest {
            resource_logs: vec![pb::ResourceLogs {
                resource: Some(pb::Resource {
                    attributes: self.resource.clone(),
                }),
                scope_logs: vec![pb::ScopeLogs {
                    scope: Some(pb::InstrumentationScope {
                        name: EVENT_NAME.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    log_records,
                }],
            }],
        }
    }
}

fn kv(key: String, value: pb::Value) -> pb::KeyValue {
    pb::KeyValue {
        key,
        value: Some(pb::AnyValue { value: Some(value) }),
    }
}

/// A JSON value as an OTLP value (`None` for null and empty strings, which carry nothing).
fn any_value(v: serde_json::Value) -> Option<pb::Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::String(s) if s.is_empty() => return None,
        J::String(s) => pb::Value::String(s),
        J::Bool(b) => pb::Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => pb::Value::Int(i),
            None => pb::Value::Double(n.as_f64().unwrap_or_default()),
        },
        J::Array(items) => pb::Value::Array(pb::ArrayValue {
            values: items
                .into_iter()
                .filter_map(any_value)
                .map(|v| pb::AnyValue { value: Some(v) })
                .collect(),
        }),
        J::Object(fields) => pb::Value::KvList(pb::KeyValueList {
            values: fields
                .into_iter()
                .filter_map(|(k, v)| any_value(v).map(|v| kv(k, v)))
                .collect(),
        }),
    })
}

impl Sink for OtlpSink {
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
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(self.request(batch).encode_to_vec());
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let req = self.auth.apply(&self.name, req)?;
            let resp = req
                .send()
                .await
                .map_err(|e| http::transport_error(&self.name, &self.target, &e))?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(|e| http::transport_error(&self.name, &self.target, &e))?;
            if !status.is_success() {
                return Err(http::status_error(
                    &self.name,
                    &self.target,
                    status,
                    &String::from_utf8_lossy(&body),
                    "no OTLP logs endpoint there; set otlp.url to it, e.g. http://otel-collector:4318/v1/logs",
                ));
            }
            // A partial success must not be retried (OTLP spec): the refused records are
            // refused for good.
            if let Ok(answer) = pb::ExportLogsServiceResponse::decode(body.as_ref())
                && let Some(partial) = answer.partial_success
                && partial.rejected_log_records > 0
            {
                return Err(SinkError::permanent(
                    &self.name,
                    FailureKind::Rejected,
                    format!(
                        "POST {}: {} of {} records rejected: {}",
                        self.target,
                        partial.rejected_log_records,
                        batch.len(),
                        http::excerpt(&partial.error_message)
                    ),
                ));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::sink::testing::record;

    #[test]
    fn records_become_log_records_with_typed_attributes() {
        let config: OtlpConfig = serde_yaml::from_str(
            "{url: 'http://127.0.0.1:1/v1/logs', resourceAttributes: {deployment.environment: prod}}",
        )
        .unwrap();
        let sink = OtlpSink::new("o", &config).unwrap();
        let mut failed = record("b", "Database", AuditOutcome::Failure);
        failed.reason = "SQL".into();
        let req = sink.request(&[record("a", "DatabaseUser", AuditOutcome::Success), failed]);
        let bytes = req.encode_to_vec();
        let req = pb::ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let rl = &req.resource_logs[0];
        let resource: Vec<&str> = rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(resource, ["deployment.environment", "service.name"]);
        let logs = &rl.scope_logs[0].log_records;
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].time_unix_nano, 1_796_119_872_345_000_000);
        assert_eq!(
            (logs[0].severity_number, logs[1].severity_text.as_str()),
            (9, "WARN")
        );
        let attr = |i: usize, key: &str| {
            logs[i]
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(attr(0, "id"), Some(pb::Value::String("a".into())));
        assert_eq!(attr(0, "durationMs"), Some(pb::Value::Int(12)));
        assert!(matches!(attr(0, "resource"), Some(pb::Value::KvList(_))));
        assert!(matches!(attr(0, "statements"), Some(pb::Value::Array(_))));
        assert_eq!(attr(0, "reason"), None);
        assert_eq!(attr(1, "reason"), Some(pb::Value::String("SQL".into())));
        let Some(pb::Value::String(body)) = logs[0].body.clone().unwrap().value else {
            panic!("body");
        };
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&body).unwrap(),
            record("a", "DatabaseUser", AuditOutcome::Success)
        );
    }
}
