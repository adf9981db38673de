//! Benchmark (not a test): the admission latency DatabasePolicies add per object. N Database
//! objects (default 500, `BENCH_OBJECTS=N`) are server-side applied one after another with
//! `dryRun=All` against the real test apiserver — each is a full CREATE admission (mutating
//! webhooks, schema validation, ValidatingAdmissionPolicies, validating webhooks) that is
//! never stored, so nothing is reconciled and etcd does not grow between variants. Every
//! object complies, so every one is admitted (a refusal fails the run).
//!
//! Variants, in this order in one run, on one environment (`AuditEnv`: apiserver, databases,
//! the hub with its admission server):
//!
//! - `none`: no DatabasePolicy, no policy webhook registered;
//! - `cel`: one DatabasePolicy (`enforcementAction: deny`, Databases in the namespace:
//!   naming, requiredLabels, deletion rules) that the hub compiles into a
//!   ValidatingAdmissionPolicy + binding — the apiserver evaluates its CEL in-process;
//! - `cel+rego`: the same policy with a Rego rule added, and the hub's policy webhook
//!   registered (failurePolicy `Fail`, so an apply the webhook did not answer would be
//!   refused, never silently timed): the apiserver also calls the hub over HTTPS, which
//!   evaluates the Rego.
//!
//! Before each measured variant its policy is waited on until enforced (status.phase Active,
//! then a violating dry run is refused with the expected rule), then 50 warm-up applies are
//! made and not counted. The hub's `requested-by` mutating webhook (installed by the chart
//! too) is registered in every variant, so it is part of the baseline.
//!
//! Printed: mean, p50, p99 and max per variant, the ratios of p50 and p99 to `none`, and the
//! p50 added per object.
//!
//! Run: `cargo bench -p dbprov-tests --bench policy_admission` (`BENCH_OBJECTS=N`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::time::{Duration, Instant};

use dbprov_tests::{
    admission,
    audit_env::{AuditEnv, SinkTargets},
    scenario::Scenario,
};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Namespace of the measured objects (also the prefix the naming rule requires).
const NS: &str = "polbench";
const POLICY: &str = "bench-guard";
const WEBHOOK: &str = "dbprov-hub-policy";
const API: &str = "dbops.dbprovision.io/v1alpha1";
/// Applies made before each measured series and not counted.
const WARMUP: usize = 50;

fn objects() -> usize {
    std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The hub's audit config: a file sink only (nothing is provisioned, so it stays quiet).
fn file_sink(t: &SinkTargets) -> String {
    format!(
        "sinks:\n  - name: file\n    type: file\n    file:\n      path: {}\n",
        t.file.display()
    )
}

/// Database `<tag>-<i>`, compliant with every rule of the policy.
fn database(tag: &str, i: usize) -> Value {
    json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": format!("{tag}-{i}"), "namespace": NS,
                     "labels": {"team": "payments"}},
        "spec": {"instanceRef": {"name": "pg"}, "name": format!("{NS}_{tag}_{i}"),
                 "deletionProtection": true, "deletionPolicy": "Retain"}})
}

/// The CEL-only rules (all compiled into the ValidatingAdmissionPolicy).
fn cel_spec() -> Value {
    json!({
        "enforcementAction": "deny",
        "match": {"namespaces": [NS], "kinds": ["Database"]},
        "naming": {"database": {"prefix": "{namespace}_", "pattern": "^[a-z0-9_]+$"}},
        "requiredLabels": [{"key": "team", "valuePattern": "^[a-z]+$"}],
        "deletion": {"requireDeletionProtection": true, "allowedDeletionPolicies": ["Retain"]},
    })
}

const REGO: &str = "package benchpii\n\nviolation contains {\"msg\": \"database names may not contain pii\"} if {\n  contains(input.review.object.spec.name, \"pii\")\n}\n";

fn policy(spec: Value) -> Value {
    json!({"apiVersion": API, "kind": "DatabasePolicy",
        "metadata": {"name": POLICY}, "spec": spec})
}

/// Server-side apply of `doc` with `dryRun=All`: how long the apiserver took, or its refusal.
async fn dry_apply(s: &Scenario, doc: &Value) -> Result<Duration, String> {
    let api = s.catalog.api_for(&s.mgmt.client(), doc).unwrap();
    let mut pp = PatchParams::apply("policy-bench").force();
    pp.dry_run = true;
    let name = doc["metadata"]["name"].as_str().unwrap();
    let start = Instant::now();
    match api.patch(name, &pp, &Patch::Apply(doc)).await {
        Ok(_) => Ok(start.elapsed()),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits until the policy is Active and the apiserver refuses `probe` naming `rule`.
async fn wait_enforced(s: &Scenario, probe: &Value, rule: &str) {
    s.wait_for_in("", "DatabasePolicy", POLICY, "Active", |v| {
        v["status"]["phase"] == "Active"
    })
    .await;
    let start = Instant::now();
    loop {
        match dry_apply(s, probe).await {
            Err(m) if m.contains(&format!("DatabasePolicy {POLICY} rule {rule}")) => return,
            other => assert!(
                start.elapsed() < Duration::from_secs(120),
                "policy not enforced ({rule}) within 120 s; last answer: {other:?}\nhub log:\n{}",
                s.hub.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `WARMUP` uncounted applies, then `n` timed ones, one at a time.
async fn measure(s: &Scenario, tag: &str, n: usize) -> Vec<Duration> {
    for i in 0..WARMUP {
        dry_apply(s, &database(&format!("w{tag}"), i))
            .await
            .unwrap_or_else(|e| panic!("{tag}: warm-up apply refused: {e}"));
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let took = dry_apply(s, &database(tag, i))
            .await
            .unwrap_or_else(|e| panic!("{tag}: compliant object {i} refused: {e}"));
        samples.push(took);
    }
    samples.sort();
    samples
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Series {
    name: &'static str,
    describe: &'static str,
    sorted: Vec<Duration>,
}

impl Series {
    fn mean(&self) -> Duration {
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let n = objects();
    let env = AuditEnv::start_with(NS, file_sink)
        .await
        .unwrap_or_else(|e| panic!("starting the environment: {e}"));
    let s = &env.s;
    let mut series = Vec::new();

    // (a) no policy.
    series.push(Series {
        name: "none",
        describe: "no DatabasePolicy, no policy webhook",
        sorted: measure(s, "a", n).await,
    });

    // (b) CEL only: the hub compiles the policy into a ValidatingAdmissionPolicy.
    s.apply(policy(cel_spec())).await;
    let mut unlabeled = database("probe", 0);
    unlabeled["metadata"]["labels"] = json!({});
    wait_enforced(s, &unlabeled, "requiredLabels[team]").await;
    series.push(Series {
        name: "cel",
        describe: "ValidatingAdmissionPolicy (naming, requiredLabels, deletion)",
        sorted: measure(s, "b", n).await,
    });

    // (c) the same policy plus a Rego rule, checked by the hub's webhook.
    let url = format!(
        "{}{}",
        env.admission_base,
        dbprov_hub::admission::POLICY_PATH
    );
    admission::register_policy_webhook(&s.mgmt.client(), WEBHOOK, &url, &env.admission_ca, "Fail")
        .await
        .unwrap();
    let mut spec = cel_spec();
    spec["rego"] = json!([{"name": "no-pii", "module": REGO}]);
    s.apply(policy(spec)).await;
    let mut pii = database("probe", 0);
    pii["spec"]["name"] = json!(format!("{NS}_pii"));
    wait_enforced(s, &pii, "rego/no-pii").await;
    series.push(Series {
        name: "cel+rego",
        describe: "the same + Rego in the hub's webhook (HTTPS call, failurePolicy Fail)",
        sorted: measure(s, "c", n).await,
    });

    let base_p50 = percentile(&series[0].sorted, 0.50);
    let base_p99 = percentile(&series[0].sorted, 0.99);
    println!(
        "policy_admission: N={n} server-side applies (dryRun=All) of compliant Databases per variant, one at a time, {WARMUP} warm-up applies each; profile {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:<9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}  what",
        "variant", "mean ms", "p50 ms", "p99 ms", "max ms", "p50 ratio", "p99 ratio", "+p50 ms"
    );
    for r in &series {
        let p50 = percentile(&r.sorted, 0.50);
        let p99 = percentile(&r.sorted, 0.99);
        println!(
            "{:<9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>+10.2}  {}",
            r.name,
            ms(r.mean()),
            ms(p50),
            ms(p99),
            ms(*r.sorted.last().unwrap()),
            ms(p50) / ms(base_p50),
            ms(p99) / ms(base_p99),
            ms(p50) - ms(base_p50),
            r.describe
        );
    }
    drop(env);
}
