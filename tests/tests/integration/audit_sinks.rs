//! The hub's audit sinks against a real log store: VictoriaLogs, through its Loki push API and
//! its Elasticsearch bulk API. Sinks are built from the audit config the way the hub builds
//! them, batches are sent in-process, and what the store keeps is read back with LogsQL,
//! field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use dbprov_contract::audit::{AuditOutcome, AuditRecord, AuditResource, Requester};
use dbprov_hub::audit::{
    config::{self, AuditConfig},
    sink::{FailureKind, Sink},
};
use dbprov_tests::{require, victorialogs::Entry, victorialogs::VictoriaLogs};
use serde_json::Value;

/// Long enough for a loaded 2-core machine; the wait ends as soon as the entries are there.
const SEARCHABLE: Duration = Duration::from_secs(60);

/// Three records covering every field: a user's change with statements and effects, a
/// failure with reason and message, and a hub refusal without instance or statements.
fn records(tag: &str) -> Vec<AuditRecord> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let time = |ago_ms: i64| {
        (now - k8s_openapi::jiff::SignedDuration::from_millis(ago_ms))
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    let id = |n: u32| format!("{tag}-{n}-{}", dbprov_tests::random_hex(6));
    vec![
        AuditRecord {
            id: id(1),
            time: time(3000),
            source: "agent".into(),
            cluster: "prod-eu".into(),
            instance: "team-a/pg-main".into(),
            engine: "postgres".into(),
            database: "shop".into(),
            object: "shop_app".into(),
            operation: "ensure_user".into(),
            outcome: AuditOutcome::Success,
            reason: String::new(),
            message: String::new(),
            duration_ms: 42,
            resource: AuditResource {
                kind: "DatabaseUser".into(),
                namespace: "team-a".into(),
                name: "shop-app".into(),
                uid: "8d6c4c1e-1111-4a55-9d3e-2b8f0c9e0a01".into(),
                generation: 7,
            },
            intent_id: format!("intent-{tag}-1"),
            requested_by: Some(Requester {
                username: "alice@example.com".into(),
                uid: Some("u-alice".into()),
                groups: vec!["dba".into(), "system:authenticated".into()],
                service_account: None,
                operation: "UPDATE".into(),
                at: time(60_000),
            }),
            trigger: "reconcile".into(),
            statements: vec![
                "CREATE ROLE \"shop_app\" LOGIN PASSWORD '<redacted>'".into(),
                "GRANT CONNECT ON DATABASE \"shop\" TO \"shop_app\"".into(),
            ],
            statements_total: 2,
            effects: vec!["secret team-a/shop-app-credentials written".into()],
        },
        AuditRecord {
            id: id(2),
            time: time(2000),
            source: "agent".into(),
            cluster: "prod-eu".into(),
            instance: "team-b/maria".into(),
            engine: "mysql".into(),
            database: "billing".into(),
            object: String::new(),
            operation: "drop_database".into(),
            outcome: AuditOutcome::Failure,
            reason: "SQL".into(),
            message: "ERROR 1010 (HY000): Error dropping database (can't rmdir './billing')".into(),
            duration_ms: 0,
            resource: AuditResource {
                kind: "Database".into(),
                namespace: "team-b".into(),
                name: "billing".into(),
                uid: "8d6c4c1e-2222-4a55-9d3e-2b8f0c9e0a02".into(),
                generation: 2,
            },
            intent_id: format!("intent-{tag}-2"),
            requested_by: Some(Requester {
                username: "system:serviceaccount:team-b:deployer".into(),
                uid: None,
                groups: vec!["system:serviceaccounts".into()],
                service_account: Some("team-b/deployer".into()),
                operation: "CREATE".into(),
                at: String::new(),
            }),
            trigger: "deletion".into(),
            statements: vec![],
            statements_total: 1,
            effects: vec![],
        },
        AuditRecord {
            id: id(3),
            time: time(1000),
            source: "hub".into(),
            cluster: "staging".into(),
            instance: String::new(),
            engine: String::new(),
            database: String::new(),
            object: String::new(),
            operation: "ensure_grant".into(),
            outcome: AuditOutcome::Refused,
            reason: "AUDIT_BUFFER_FULL".into(),
            message: "the audit buffer of sink loki is full (whenFull: block)".into(),
            duration_ms: 0,
            resource: AuditResource {
                kind: "DatabaseGrant".into(),
                namespace: String::new(),
                name: "cluster-wide".into(),
                uid: String::new(),
                generation: 1,
            },
            intent_id: String::new(),
            requested_by: None,
            trigger: "annotation".into(),
            statements: vec![],
            statements_total: 0,
            effects: vec![],
        },
    ]
}

/// A record as VictoriaLogs stores it: nested objects flattened with dots, arrays as their
/// JSON text, numbers as strings, empty strings gone.
fn flattened(record: &AuditRecord) -> BTreeMap<String, Value> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &key, out);
                }
            }
            Value::String(s) if s.is_empty() => {}
            Value::Null => {}
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&serde_json::to_value(record).unwrap(), "", &mut out);
    out
}

/// Every field of `record` is in `entry` with its value, the entry's `_time` is the
/// record's time, and the entry holds nothing else but VictoriaLogs' own fields and
/// `extra` (the Loki labels).
fn assert_round_trip(entry: &Entry, record: &AuditRecord, extra: &[&str]) {
    let expected = flattened(record);
    for (field, want) in &expected {
        let got = entry
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("record {}: field {field} missing in {entry:?}", record.id));
        match want {
            Value::String(s) => assert_eq!(got, s, "record {}: field {field}", record.id),
            // Arrays are kept as JSON text; compare what they hold.
            Value::Array(_) => assert_eq!(
                &serde_json::from_str::<Value>(got).unwrap(),
                want,
                "record {}: field {field}",
                record.id
            ),
            other => assert_eq!(
                got,
                other.to_string(),
                "record {}: field {field}",
                record.id
            ),
        }
    }
    let stored_time: k8s_openapi::jiff::Timestamp =
        entry["_time"].as_str().unwrap().parse().unwrap();
    let record_time: k8s_openapi::jiff::Timestamp = record.time.parse().unwrap();
    assert_eq!(stored_time, record_time, "record {}: _time", record.id);
    for field in entry.keys() {
        assert!(
            expected.contains_key(field)
                || ["_msg", "_stream", "_stream_id", "_time"].contains(&field.as_str())
                || extra.contains(&field.as_str()),
            "record {}: unexpected field {field} in {entry:?}",
            record.id
        );
    }
}

fn by_id(entries: Vec<Entry>) -> BTreeMap<String, Entry> {
    entries
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect()
}

fn ids_query(batch: &[AuditRecord]) -> String {
    let ids: Vec<String> = batch.iter().map(|r| format!("{:?}", r.id)).collect();
    format!("id:in({})", ids.join(","))
}

/// Builds the one sink of a YAML audit config.
fn sink_from(yaml: &str) -> Arc<dyn Sink> {
    let config = AuditConfig::parse(yaml, "test").unwrap();
    assert_eq!(config.sinks.len(), 1);
    config::build(&config.sinks[0]).unwrap()
}

fn loki_yaml(vl: &VictoriaLogs, name: &str, auth: &str) -> String {
    format!(
        r#"
sinks:
  - name: {name}
    type: loki
    loki:
      url: {url}
      labels: {{env: test}}
      timeoutSeconds: 5{auth}
"#,
        url = vl.loki_push_url()
    )
}

fn es_yaml(vl: &VictoriaLogs, name: &str, auth: &str) -> String {
    format!(
        r#"
sinks:
  - name: {name}
    type: elasticsearch
    elasticsearch:
      url: {url}
      # VictoriaLogs: time from @timestamp, streams by bounded fields (see docs/audit.md).
      queryParams:
        _time_field: "@timestamp"
        _stream_fields: "cluster,resource.kind,outcome"
      timeoutSeconds: 5{auth}
"#,
        url = vl.elasticsearch_url()
    )
}

#[tokio::test]
async fn loki_sink_records_round_trip_field_by_field() {
    dbprov_tests::init_crypto();
    let vl = require!(VictoriaLogs::start().await);
    let sink = sink_from(&loki_yaml(&vl, "loki", ""));
    let batch = records("loki");
    sink.send(&batch).await.unwrap();

    let entries = by_id(
        vl.wait_for(&ids_query(&batch), 3, SEARCHABLE)
            .await
            .unwrap(),
    );
    for record in &batch {
        let entry = &entries[&record.id];
        assert_round_trip(entry, record, &["job", "kind", "env"]);
        // The bounded label set is the stream; nothing per record is in it.
        assert_eq!(
            entry["_stream"],
            format!(
                "{{cluster=\"{}\",env=\"test\",job=\"dbprov-audit\",kind=\"{}\",outcome=\"{}\"}}",
                record.cluster,
                record.resource.kind,
                record.outcome.as_str()
            )
        );
    }
    // Field by field, and by stream, the way an operator asks.
    let one = |q: String| {
        let vl = &vl;
        async move { vl.query(&q).await.unwrap() }
    };
    let got = one(format!("operation:=ensure_user AND id:={:?}", batch[0].id)).await;
    assert_eq!(got.len(), 1);
    let got = one(format!(
        "requestedBy.username:=\"alice@example.com\" AND {}",
        ids_query(&batch)
    ))
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], batch[0].id.as_str());
    let got = one(format!(
        "_stream:{{job=\"dbprov-audit\",outcome=\"failure\"}} AND {}",
        ids_query(&batch)
    ))
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["reason"], "SQL");
    let got = one(format!(
        "resource.kind:=DatabaseGrant AND {}",
        ids_query(&batch)
    ))
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["outcome"], "refused");
}

#[tokio::test]
async fn elasticsearch_sink_records_round_trip_and_a_resent_batch_is_stored_again() {
    dbprov_tests::init_crypto();
    let vl = require!(VictoriaLogs::start().await);
    let sink = sink_from(&es_yaml(&vl, "es", ""));
    let batch = records("es");
    sink.send(&batch).await.unwrap();

    let entries = by_id(
        vl.wait_for(&ids_query(&batch), 3, SEARCHABLE)
            .await
            .unwrap(),
    );
    for record in &batch {
        let entry = &entries[&record.id];
        // @timestamp became _time (checked inside) and is not kept as a field.
        assert_round_trip(entry, record, &[]);
        assert_eq!(
            entry["_stream"],
            format!(
                "{{cluster=\"{}\",outcome=\"{}\",resource.kind=\"{}\"}}",
                record.cluster,
                record.outcome.as_str(),
                record.resource.kind
            )
        );
    }
    let got = vl
        .query(&format!(
            "operation:=drop_database AND id:={:?}",
            batch[1].id
        ))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["requestedBy.serviceAccount"], "team-b/deployer");

    // The same batch again (a shipper whose answer was lost). Elasticsearch refuses each
    // `create` with 409 (the sink counts that as delivered, see its unit tests);
    // VictoriaLogs ignores `_id` and answers 201 for every item, so it keeps a second copy:
    // queries over VictoriaLogs count distinct ids (docs/audit.md).
    sink.send(&batch).await.unwrap();
    let twice = vl
        .wait_for(&ids_query(&batch), 6, SEARCHABLE)
        .await
        .unwrap();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for e in &twice {
        *per_id
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(per_id.values().all(|n| *n == 2), "{per_id:?}");
    let distinct = vl
        .query(&format!("{} | uniq by (id)", ids_query(&batch)))
        .await
        .unwrap();
    assert_eq!(distinct.len(), 3);
}

#[tokio::test]
async fn otlp_sink_records_round_trip_field_by_field() {
    dbprov_tests::init_crypto();
    let vl = require!(VictoriaLogs::start().await);
    let sink = sink_from(&format!(
        r#"
sinks:
  - name: otlp
    type: otlp
    otlp:
      url: {}
      resourceAttributes: {{k8s.cluster.name: mgmt}}
"#,
        vl.otlp_logs_url()
    ));
    let batch = records("otlp");
    sink.send(&batch).await.unwrap();

    let entries = by_id(
        vl.wait_for(&ids_query(&batch), 3, SEARCHABLE)
            .await
            .unwrap(),
    );
    for record in &batch {
        let entry = &entries[&record.id];
        assert_round_trip(
            entry,
            record,
            &[
                "severity_number",
                "severity_text",
                "service.name",
                "k8s.cluster.name",
                "event_name",
                "scope.name",
                "scope.version",
            ],
        );
        // The body is the whole record.
        let body: AuditRecord = serde_json::from_str(entry["_msg"].as_str().unwrap()).unwrap();
        assert_eq!(&body, record);
        let severity = if record.outcome == AuditOutcome::Success {
            "INFO"
        } else {
            "WARN"
        };
        assert_eq!(entry["severity_text"], severity);
        assert_eq!(entry["service.name"], "dbprov-hub");
        assert_eq!(entry["k8s.cluster.name"], "mgmt");
    }
    let got = vl
        .query(&format!(
            "requestedBy.serviceAccount:=\"team-b/deployer\" AND {}",
            ids_query(&batch)
        ))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["operation"], "drop_database");
}

#[tokio::test]
async fn a_store_outage_is_retryable_and_the_batch_arrives_after_restart() {
    dbprov_tests::init_crypto();
    let mut vl = require!(VictoriaLogs::start().await);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    let secret = format!("pw-{}", dbprov_tests::random_hex(8));
    std::fs::write(&password, &secret).unwrap();
    // Credentials a store without auth ignores; here to show they never reach a message.
    let auth = format!(
        "\n      basicAuth: {{username: audit, passwordFile: {}}}",
        password.display()
    );
    let loki = sink_from(&loki_yaml(&vl, "loki-outage", &auth));
    let es = sink_from(&es_yaml(&vl, "es-outage", &auth));
    let before_loki = records("before-loki");
    let before_es = records("before-es");
    loki.send(&before_loki).await.unwrap();
    es.send(&before_es).await.unwrap();
    vl.wait_for(&ids_query(&before_loki), 3, SEARCHABLE)
        .await
        .unwrap();
    vl.wait_for(&ids_query(&before_es), 3, SEARCHABLE)
        .await
        .unwrap();

    vl.stop().await;
    let during_loki = records("during-loki");
    let during_es = records("during-es");
    for (sink, batch) in [(&loki, &during_loki), (&es, &during_es)] {
        let err = sink.send(batch).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.kind(), FailureKind::Connect, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("audit sink {:?}", sink.name())),
            "{msg}"
        );
        assert!(msg.contains("cannot connect"), "{msg}");
        assert!(!msg.contains(&secret), "{msg}");
    }

    vl.start_again().await.unwrap();
    loki.send(&during_loki).await.unwrap();
    es.send(&during_es).await.unwrap();
    for batch in [&before_loki, &before_es, &during_loki, &during_es] {
        let entries = vl.wait_for(&ids_query(batch), 3, SEARCHABLE).await.unwrap();
        let got: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
        for r in batch {
            assert!(got.contains(&r.id.as_str()), "{} missing: {got:?}", r.id);
        }
    }
}

#[tokio::test]
async fn refused_credentials_and_wrong_urls_are_permanent_and_name_the_fix() {
    dbprov_tests::init_crypto();
    let user = "audit";
    let right = format!("right-{}", dbprov_tests::random_hex(8));
    let wrong = format!("wrong-{}", dbprov_tests::random_hex(8));
    let vl = require!(VictoriaLogs::start_with_basic_auth(user, &right).await);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| {
        let p = dir.path().join(name);
        // A Secret written with `echo` ends with a newline: the sink trims it.
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p
    };
    let right_file = write("right", &right);
    let wrong_file = write("wrong", &wrong);
    let auth = |file: &std::path::Path| {
        format!(
            "\n      basicAuth: {{username: {user}, passwordFile: {}}}",
            file.display()
        )
    };

    // The right password: delivered.
    let batch = records("auth");
    sink_from(&loki_yaml(&vl, "loki-ok", &auth(&right_file)))
        .send(&batch[..1])
        .await
        .unwrap();
    sink_from(&es_yaml(&vl, "es-ok", &auth(&right_file)))
        .send(&batch[1..])
        .await
        .unwrap();
    vl.wait_for(&ids_query(&batch), 3, SEARCHABLE)
        .await
        .unwrap();

    // A wrong password: permanent, says to check the credentials, shows neither password.
    for sink in [
        sink_from(&loki_yaml(&vl, "loki-bad", &auth(&wrong_file))),
        sink_from(&es_yaml(&vl, "es-bad", &auth(&wrong_file))),
    ] {
        let err = sink.send(&batch).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(err.metric_label(), "auth");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("audit sink {:?}", sink.name())),
            "{msg}"
        );
        assert!(msg.contains("401"), "{msg}");
        assert!(
            msg.contains("check the user and the contents of passwordFile"),
            "{msg}"
        );
        assert!(!msg.contains(&wrong) && !msg.contains(&right), "{msg}");
    }

    // A URL that is not the push / bulk endpoint: permanent, with the server's answer.
    let wrong_path = AuditConfig::parse(
        &format!(
            "sinks: [{{name: loki-path, type: loki, loki: {{url: '{}/insert/loki/api/v1/pushh', basicAuth: {{username: {user}, passwordFile: {}}}}}}}]",
            vl.endpoint(),
            right_file.display()
        ),
        "test",
    )
    .unwrap();
    let err = config::build(&wrong_path.sinks[0])
        .unwrap()
        .send(&batch)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("audit sink \"loki-path\""), "{msg}");
    assert!(msg.contains("check the url"), "{msg}");
    assert!(msg.contains("unsupported path requested"), "{msg}");

    // A password file that is not there fails the build, naming the field.
    let missing = dir.path().join("not-mounted");
    let config =
        AuditConfig::parse(&loki_yaml(&vl, "loki-missing", &auth(&missing)), "test").unwrap();
    let msg = config::build(&config.sinks[0]).unwrap_err().to_string();
    assert!(msg.contains("loki.basicAuth.passwordFile"), "{msg}");
    assert!(msg.contains("audit.secretMounts"), "{msg}");

    // Nothing the refused sinks sent was stored.
    vl.wait_for(&ids_query(&batch), 3, SEARCHABLE)
        .await
        .unwrap();
}

#[tokio::test]
async fn file_sink_from_config_rotates_and_keeps_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit/audit.jsonl");
    let sink = sink_from(&format!(
        "sinks: [{{name: file, type: file, file: {{path: {}, maxSizeMiB: 1, maxFiles: 2}}}}]",
        path.display()
    ));
    // ~0.4 MiB per batch of 3 records: two batches fill a file, the third one rotates it.
    let mut sent = Vec::new();
    for n in 0..8 {
        let mut batch = records(&format!("file{n}"));
        for r in &mut batch {
            r.statements = vec!["x".repeat(2048); 64];
        }
        sink.send(&batch).await.unwrap();
        sent.extend(batch);
    }
    let read = |p: &std::path::Path| -> Vec<AuditRecord> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let numbered = |n: u32| std::path::PathBuf::from(format!("{}.{n}", path.display()));
    // Files of batches 1-2, 3-4, 5-6, 7-8: three rotations with maxFiles 2 dropped the
    // first file. Oldest first: .2, .1, live.
    let mut kept = Vec::new();
    for p in [numbered(2), numbered(1), path.clone()] {
        let records = read(&p);
        assert!(!records.is_empty(), "{} is empty", p.display());
        assert!(
            std::fs::metadata(&p).unwrap().len() <= 1024 * 1024,
            "{}",
            p.display()
        );
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        kept.extend(records);
    }
    assert!(!numbered(3).exists());
    assert_eq!(
        kept,
        sent[6..],
        "batches 3-8 once each, in order, across the rotated files"
    );
}

/// The chart's `audit.sinks` become a config the hub accepts, mounted where
/// `DBPROV_AUDIT_CONFIG` points, with every credential file inside a mounted Secret and the
/// queue on its own volume.
#[test]
fn the_chart_renders_an_audit_config_the_hub_accepts_with_its_secrets_mounted() {
    use dbprov_tests::{helm, process::WorkDir, tools};
    require!(tools::find("helm"));
    let dir = WorkDir::new("audit-chart").unwrap();
    let values = dir.join("audit-values.yaml");
    std::fs::write(
        &values,
        r#"
audit:
  enabled: true
  secretMounts: [loki-credentials, es-audit]
  sinks:
    - name: out
      type: stdout
    - name: loki
      type: loki
      whenFull: block
      loki:
        url: https://loki-gateway.monitoring/loki/api/v1/push
        labels: {env: prod}
        basicAuth: {username: dbprov, passwordFile: /etc/dbprov/audit/secrets/loki-credentials/password}
        tls: {caFile: /etc/dbprov/audit/secrets/loki-credentials/ca.crt}
    - name: es
      type: elasticsearch
      elasticsearch:
        url: https://es.example:9200
        dataStream: logs-dbprov.audit-default
        apiKeyFile: /etc/dbprov/audit/secrets/es-audit/apiKey
"#,
    )
    .unwrap();
    let out = helm::template(
        &dir,
        "dbprov-hub",
        "hub",
        "dbprov-system",
        &["-f", values.to_str().unwrap()],
    )
    .unwrap();
    assert!(out.ok, "helm template: {}", out.stderr);
    let docs = helm::documents(&out.stdout).unwrap();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "hub-dbprov-hub-audit")
        .expect("the audit ConfigMap");
    let config = AuditConfig::parse(cm["data"]["audit.yaml"].as_str().unwrap(), "chart").unwrap();
    assert_eq!(
        config.queue_dir,
        std::path::Path::new("/var/lib/dbprov/audit")
    );
    assert_eq!(config.sinks.len(), 3);

    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_array().unwrap();
    let config_path = env
        .iter()
        .find(|e| e["name"] == "DBPROV_AUDIT_CONFIG")
        .and_then(|e| e["value"].as_str())
        .expect("DBPROV_AUDIT_CONFIG");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &Value| volumes.iter().find(|v| &v["name"] == name).unwrap();
    let mounted_at = |path: &str| {
        mounts
            .iter()
            .find(|m| {
                let at = m["mountPath"].as_str().unwrap();
                path == at || path.starts_with(&format!("{at}/"))
            })
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {mounts:?}"))
    };
    let config_mount = mounted_at(config_path);
    assert_eq!(
        volume(&config_mount["name"])["configMap"]["name"],
        "hub-dbprov-hub-audit"
    );
    let queue = mounted_at(config.queue_dir.to_str().unwrap());
    assert!(volume(&queue["name"])["emptyDir"].is_object());
    let secret_files = [
        "/etc/dbprov/audit/secrets/loki-credentials/password",
        "/etc/dbprov/audit/secrets/loki-credentials/ca.crt",
        "/etc/dbprov/audit/secrets/es-audit/apiKey",
    ];
    for file in secret_files {
        let m = mounted_at(file);
        assert_eq!(m["readOnly"], true, "{file}");
        let secret = file.split('/').nth(5).unwrap();
        assert_eq!(volume(&m["name"])["secret"]["secretName"], secret, "{file}");
    }
    // A changed config rolls the pods (the hub reads it at start).
    assert!(
        deploy["spec"]["template"]["metadata"]["annotations"]["checksum/audit-config"].is_string()
    );

    // The PVC queue: a claim of the chart's own, kept on uninstall; refused with replicas > 1.
    let pvc_args = [
        "-f",
        values.to_str().unwrap(),
        "--set",
        "audit.queue.persistentVolumeClaim.enabled=true",
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ];
    let out = helm::template(&dir, "dbprov-hub", "hub", "dbprov-system", &pvc_args).unwrap();
    assert!(out.ok, "helm template: {}", out.stderr);
    let docs = helm::documents(&out.stdout).unwrap();
    let pvc = docs
        .iter()
        .find(|d| d["kind"] == "PersistentVolumeClaim")
        .expect("the queue claim");
    assert_eq!(
        pvc["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let out = helm::template(&dir, "dbprov-hub", "hub", "dbprov-system", &pvc_args[..4]).unwrap();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("audit.queue.persistentVolumeClaim")
            && out.stderr.contains("replicaCount=1"),
        "{}",
        out.stderr
    );
}

/// Volume: 20 batches of 500 records through each sink, every record stored. Prints the
/// delivery rate (a measurement for docs/audit.md, no threshold).
#[tokio::test]
async fn ten_thousand_records_through_each_sink_are_all_stored() {
    dbprov_tests::init_crypto();
    let vl = require!(VictoriaLogs::start().await);
    let loki = sink_from(&loki_yaml(&vl, "loki-volume", ""));
    let es = sink_from(&es_yaml(&vl, "es-volume", ""));
    for sink in [&loki, &es] {
        let tag = format!("{}-{}", sink.name(), dbprov_tests::random_hex(4));
        let template = records(&tag);
        let batches: Vec<Vec<AuditRecord>> = (0..20)
            .map(|b| {
                (0..500)
                    .map(|i| {
                        let mut r = template[i % 3].clone();
                        r.id = format!("{tag}-{b}-{i}");
                        r.intent_id = tag.clone();
                        r
                    })
                    .collect()
            })
            .collect();
        let started = std::time::Instant::now();
        for batch in &batches {
            sink.send(batch).await.unwrap();
        }
        let sent = started.elapsed();
        let query = format!("intentId:={tag:?}");
        vl.wait_for_count(&query, 10_000, SEARCHABLE).await.unwrap();
        let distinct = vl
            .query(&format!("{query} | uniq by (id) | count() as n"))
            .await
            .unwrap();
        assert_eq!(distinct[0]["n"], "10000");
        eprintln!(
            "{}: 10000 records in 20 batches acknowledged in {:.2?} ({:.0} records/s), all searchable after {:.2?}",
            sink.name(),
            sent,
            10_000.0 / sent.as_secs_f64(),
            started.elapsed()
        );
    }
}
