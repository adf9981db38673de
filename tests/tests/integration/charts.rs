//! The Helm charts, checked with the real tools: `helm lint`; `helm template` with default and
//! with full-featured values, piped to `kubectl apply --dry-run=server` against a real
//! apiserver that has our CRDs and the ServiceMonitor, PrometheusRule, Certificate and Issuer
//! CRDs (from the Prometheus Operator and cert-manager modules); `values.schema.json`
//! refusing bad values with messages that name the value; the pods' hardening and image tag;
//! `promtool check rules` / `promtool test rules` on the rendered alerts and the dashboards'
//! queries; every metric the rules and dashboards use is documented.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeSet, path::Path};

use dbprov_tests::{
    KubeEnv, helm, manifests,
    process::{self, Output, WorkDir},
    require, tools,
};
use serde_json::Value;

const NS: &str = "dbprov-system";
const AGENT_REQUIRED: &[&str] = &[
    "--set",
    "clusterName=workload-a",
    "--set",
    "hub.address=https://hub.example.com:9443",
];

const HUB_FULL: &str = r#"
replicaCount: 3
image: {repository: registry.example.com/dbprov/dbprov-hub, tag: "0.1.0-rc1", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
leaderElection: {enabled: true, leaseName: hub-lease, leaseDurationSeconds: 20}
hub: {defaultCluster: workload-a, trustDomain: example.org, heartbeatSeconds: 15, logLevel: debug, logFormat: text}
service:
  type: LoadBalancer
  port: 443
  annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}
  loadBalancerSourceRanges: [10.0.0.0/8]
tls:
  certManager:
    enabled: true
    dnsNames: [hub.example.com]
    ipAddresses: [10.1.2.3]
serviceAccount: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/x"}}
podDisruptionBudget: {enabled: true, maxUnavailable: 1}
networkPolicy:
  enabled: true
  grpcFrom: [{ipBlock: {cidr: 10.0.0.0/8}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {team: observability}}}]
podAnnotations: {example.com/a: b}
podLabels: {team: platform}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: dbprov-hub}}}
priorityClassName: system-cluster-critical
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
prometheusRule: {enabled: true, labels: {release: prometheus}, backupMaxAgeHours: 30, certificateExpiryDays: 21}
grafanaDashboards: {enabled: true}
admissionWebhook: {enabled: true, failurePolicy: Fail, timeoutSeconds: 3}
audit:
  enabled: true
  sinks:
    - {name: out, type: stdout}
    - name: loki
      type: loki
      whenFull: block
      loki:
        url: http://loki-gateway.monitoring/loki/api/v1/push
        basicAuth: {username: dbprov, passwordFile: /etc/dbprov/audit/secrets/loki-credentials/password}
  secretMounts: [loki-credentials]
"#;

const HUB_ISSUER: &str = r#"
tls:
  certManager:
    enabled: true
    issuerRef: {name: corporate-ca, kind: ClusterIssuer}
"#;

const AGENT_FULL: &str = r#"
clusterName: workload-b
hub: {address: "https://hub-a.example.com:443,https://hub-b.example.com:443", serverName: hub.example.com}
trustDomain: example.org
logLevel: debug
logFormat: text
tls:
  certManager: {enabled: true, issuerRef: {name: dbprov-ca, kind: ClusterIssuer}}
rbac: {namespaces: [team-a, team-b]}
backupVolumes: [{claimName: db-backups}]
tmpSizeLimit: 1Gi
networkPolicy: {metricsFrom: [{podSelector: {matchLabels: {app: prometheus}}}]}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
prometheusRule: {enabled: true}
grafanaDashboards: {enabled: true}
"#;

fn ok(what: &str, out: &Output) {
    assert!(out.ok, "{what} failed:\n{}\n{}", out.stdout, out.stderr);
}

fn write(dir: &WorkDir, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn render(dir: &WorkDir, chart: &str, args: &[&str]) -> (String, Vec<Value>) {
    let out = helm::template(dir, chart, chart, NS, args).unwrap();
    ok(&format!("helm template {chart} {args:?}"), &out);
    let docs = helm::documents(&out.stdout).unwrap();
    (out.stdout, docs)
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn chart_app_version(chart: &str) -> String {
    let text = std::fs::read_to_string(helm::chart(chart).join("Chart.yaml")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    v["appVersion"].as_str().unwrap().to_owned()
}

/// Every container runs hardened, with the image tag of the chart's appVersion by default.
fn check_pod(docs: &[Value], chart: &str, image_tag: &str) {
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{chart}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{chart}"
    );
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{chart}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{chart}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{chart}"
        );
        let image = c["image"].as_str().unwrap();
        assert!(
            image.ends_with(&format!(":{image_tag}")),
            "{chart}: image {image} should be tagged {image_tag}"
        );
        assert!(c["resources"]["requests"]["memory"].is_string(), "{chart}");
    }
}

/// Every `DBPROV_*` variable the Deployment sets is one the binary reads (`--help` lists them
/// as `[env: NAME=...]`), so a renamed flag cannot leave the chart silently behind.
fn check_env_is_read(docs: &[Value], chart: &str) {
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let binary = dbprov_tests::dbprov::binary(chart).unwrap();
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // The subcommand's own flags, and the global ones (logging) of the top level.
    let help = |args: &[&str]| {
        let out = std::process::Command::new(&binary)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let help = help(&args) + &help(&[]);
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        if name.starts_with("DBPROV_") || name == "POD_NAMESPACE" && chart == "dbprov-hub" {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{chart} sets {name}, which `{chart} {args:?}` does not read:\n{help}"
            );
        }
    }
}

async fn install_thirdparty_crds(env: &KubeEnv) {
    let dir = tools::tools_dir().join("thirdparty-crds");
    let docs = manifests::load_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/install-tools.sh --only thirdparty-crds)",
            dir.display()
        )
    });
    let crds: Vec<_> = docs
        .iter()
        .map(|d| serde_json::from_value(d.value.clone()).unwrap())
        .collect();
    manifests::install_crds(&env.client(), &crds).await.unwrap();
}

#[tokio::test]
async fn charts_lint_render_and_the_apiserver_accepts_every_object() {
    let env = require!(KubeEnv::start().await);
    require!(tools::find("helm"));
    let dir = WorkDir::new("charts").unwrap();

    // helm lint, strictly (warnings fail), with the values each chart requires.
    for (chart, args) in [("dbprov-hub", &[][..]), ("dbprov-agent", AGENT_REQUIRED)] {
        let mut cmd = helm::helm(&dir).unwrap();
        cmd.args(["lint", "--strict"])
            .arg(helm::chart(chart))
            .args(args);
        ok(
            &format!("helm lint {chart}"),
            &process::run(cmd, None).unwrap(),
        );
    }

    // The target cluster: our CRDs come from the hub chart (--include-crds below); the
    // third-party ones are installed for real so the optional objects are validated.
    install_thirdparty_crds(&env).await;
    manifests::create_namespaces(&env.client(), &[NS, "team-a", "team-b"])
        .await
        .unwrap();

    let hub_full = write(&dir, "hub-full.yaml", HUB_FULL);
    let hub_issuer = write(&dir, "hub-issuer.yaml", HUB_ISSUER);
    let agent_full = write(&dir, "agent-full.yaml", AGENT_FULL);
    let app_version = chart_app_version("dbprov-hub");
    // (case, chart, helm arguments, kinds it must render, image tag)
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, &'a [&'a str], &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "hub defaults",
            "dbprov-hub",
            vec!["--include-crds"],
            &[
                "CustomResourceDefinition",
                "Deployment",
                "Service",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "PodDisruptionBudget",
                "NetworkPolicy",
            ],
            &app_version,
        ),
        (
            "hub full",
            "dbprov-hub",
            vec!["-f", &hub_full],
            &[
                "Certificate",
                "Issuer",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "PodDisruptionBudget",
            ],
            "0.1.0-rc1",
        ),
        (
            "hub with a ClusterIssuer",
            "dbprov-hub",
            vec!["-f", &hub_issuer],
            &["Certificate"],
            &app_version,
        ),
        (
            "agent defaults",
            "dbprov-agent",
            AGENT_REQUIRED.to_vec(),
            &[
                "Deployment",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Service",
                "NetworkPolicy",
            ],
            &app_version,
        ),
        (
            "agent full",
            "dbprov-agent",
            vec!["-f", &agent_full],
            &[
                "Certificate",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "Role",
            ],
            &app_version,
        ),
        (
            "agent cluster-wide",
            "dbprov-agent",
            [AGENT_REQUIRED, &["--set", "rbac.clusterWide=true"]].concat(),
            &["ClusterRole", "ClusterRoleBinding"],
            &app_version,
        ),
    ];
    for (name, chart, args, want, tag) in &cases {
        let (yaml, docs) = render(&dir, chart, args);
        let got = kinds(&docs);
        for k in *want {
            assert!(got.contains(*k), "{name}: no {k} rendered (got {got:?})");
        }
        check_pod(&docs, name, tag);
        check_env_is_read(&docs, chart);
        let applied = helm::kubectl_apply(&env, &yaml, true).unwrap();
        ok(
            &format!("kubectl apply --dry-run=server ({name})"),
            &applied,
        );
        eprintln!(
            "{name}: {} objects accepted by the apiserver ({})",
            docs.len(),
            got.into_iter().collect::<Vec<_>>().join(", ")
        );
    }

    // Per-namespace RBAC: one Role and RoleBinding in each listed namespace, none elsewhere,
    // and only Secrets (plus reading ConfigMaps, for a Database's initSQL).
    let (_, docs) = render(&dir, "dbprov-agent", &["-f", &agent_full]);
    let is_journal = |d: &Value| {
        d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-journal"))
    };
    // The agent's operation journal (docs/protocol.md "Delivery contract"): one ConfigMap of
    // its own namespace, by name except for create.
    let journal: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && is_journal(d))
        .collect();
    assert_eq!(journal.len(), 1, "one journal Role");
    assert_eq!(
        journal[0]["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"],
             "resourceNames": ["dbprov-agent-journal"], "verbs": ["get", "patch"]}
        ])
    );
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && !is_journal(d))
        .collect();
    let namespaces: BTreeSet<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["team-a", "team-b"]));
    for r in roles {
        assert_eq!(
            r["rules"],
            serde_json::json!([
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
            ])
        );
    }
    assert!(!kinds(&docs).contains("ClusterRole"));
}

#[test]
fn values_schema_refuses_bad_values_with_a_message_naming_them() {
    require!(tools::find("helm"));
    let dir = WorkDir::new("charts-schema").unwrap();
    // (chart, helm arguments, what the error must say); `AGENT` stands for the agent's
    // required values.
    const AGENT: &str = "--set clusterName=a --set hub.address=https://hub:9443";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "dbprov-hub",
            "--set replicas=2",
            &["additional properties 'replicas' not allowed"],
        ),
        (
            "dbprov-hub",
            "--set-string replicaCount=two",
            &["/replicaCount", "got string, want integer"],
        ),
        (
            "dbprov-hub",
            "--set service.type=Ingress",
            &["/service/type", "value must be one of"],
        ),
        (
            "dbprov-hub",
            "--set tls.certManager.issuerRef.kind=Vault",
            &["/tls/certManager/issuerRef/kind"],
        ),
        (
            "dbprov-hub",
            "--set tls.existingSecret= --set tls.certManager.enabled=false",
            &["set tls.existingSecret"],
        ),
        (
            "dbprov-hub",
            "--set leaderElection.enabled=false",
            &["replicaCount 2 needs leaderElection.enabled"],
        ),
        (
            "dbprov-hub",
            "--set audit.enabled=true --set audit.sinks[0].name=out --set audit.sinks[0].type=syslog",
            &["/audit/sinks/0/type", "value must be one of"],
        ),
        (
            "dbprov-hub",
            "--set audit.enabled=true --set audit.sinks[0].name=out --set audit.sinks[0].type=stdout --set audit.sinks[0].whenFull=wait",
            &["/audit/sinks/0/whenFull", "value must be one of"],
        ),
        (
            "dbprov-hub",
            "--set audit.enabled=true",
            &["audit.enabled needs at least one sink"],
        ),
        (
            "dbprov-hub",
            "--set admissionWebhook.enabled=true --set admissionWebhook.failurePolicy=Deny",
            &["/admissionWebhook/failurePolicy", "value must be one of"],
        ),
        (
            "dbprov-hub",
            "--set admissionWebhook.enabled=true --set tls.certManager.enabled=false --set tls.existingSecret=hub-tls",
            &["admissionWebhook: the apiserver needs the CA"],
        ),
        (
            "dbprov-agent",
            "--set hub.address=https://hub:9443",
            &["clusterName is required"],
        ),
        (
            "dbprov-agent",
            "--set clusterName=Workload_A --set hub.address=https://hub:9443",
            &["/clusterName", "does not match pattern"],
        ),
        (
            "dbprov-agent",
            "--set clusterName=a --set hub.address=hub:9443",
            &["/hub/address", "does not match pattern"],
        ),
        (
            "dbprov-agent",
            "AGENT --set rbac.namespaces=team-a",
            &["/rbac/namespaces", "got string, want array"],
        ),
        (
            "dbprov-agent",
            "AGENT --set backupVolumes[0].name=x",
            &["/backupVolumes/0", "claimName"],
        ),
        (
            "dbprov-agent",
            "AGENT --set tls.certManager.enabled=true",
            &["tls.certManager.issuerRef.name is required"],
        ),
    ];
    for (chart, args, want) in cases {
        let args = args.replace("AGENT", AGENT);
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = helm::template(&dir, chart, chart, NS, &args).unwrap();
        assert!(!out.ok, "{chart} {args:?} was accepted");
        for w in *want {
            assert!(
                out.stderr.contains(w),
                "{chart} {args:?}: error does not say {w:?}:\n{}",
                out.stderr
            );
        }
        eprintln!("{chart} {args:?} -> {}", out.stderr.trim());
    }
}

/// The rule groups of a rendered PrometheusRule, as a Prometheus rules file.
fn rules_file(docs: &[Value]) -> String {
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    serde_yaml::to_string(&serde_json::json!({"groups": rule["spec"]["groups"]})).unwrap()
}

/// Every `dbprov_*` metric name in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("dbprov_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The anchors GitHub makes of docs/operations.md's headings: lowercase, spaces to `-`,
/// punctuation dropped.
fn runbook_anchors() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(|h| {
            h.trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `dbprov_"))
        .flat_map(|l| metric_names(l.split('|').nth(1).unwrap_or_default()))
        .collect()
}

/// Unit tests of the alerts with `promtool test rules`: each fires after its `for` on the
/// series that should trigger it, and not on healthy ones.
const HUB_RULE_TESTS: &str = r#"
rule_files: [hub-rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'dbprov_agent_connected{cluster="a"}'
        values: '1 1 0 0 0 0 0 0 0 0'
      - series: 'dbprov_agent_connected{cluster="b"}'
        values: '1x10'
      - series: 'dbprov_instance_ready{kind="DatabaseInstance",namespace="ns",name="pg"}'
        values: '0x15'
      - series: 'dbprov_schedule_last_success_timestamp_seconds{namespace="ns",schedule="nightly"}'
        values: '0x70'
      - series: 'dbprov_schedule_interval_seconds{namespace="ns",schedule="nightly"}'
        values: '300x70'
      - series: 'dbprov_schedule_last_success_timestamp_seconds{namespace="ns",schedule="paused"}'
        values: '0x40'
      - series: 'dbprov_schedule_interval_seconds{namespace="ns",schedule="paused"}'
        values: 'NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN'
      - series: 'dbprov_backup_failures_total{reason="StorageError"}'
        values: '0 0 1 1 1'
      - series: 'dbprov_certificate_expiry_timestamp_seconds{certificate="serving",pod="hub-0"}'
        values: '864000x5'
      - series: 'dbprov_hub_leader{pod="hub-0"}'
        values: '1 1 0 0 0 0'
      - series: 'dbprov_hub_leader{pod="hub-1"}'
        values: '0x5'
      - series: 'dbprov_audit_records_dropped_total{sink="loki",pod="hub-0"}'
        values: '_ _ 5 5 5 5 5 5 5 5 5 5 5 5 5'
      - series: 'dbprov_audit_sink_up{sink="loki",pod="hub-0"}'
        values: '1 1 0 0 0 0 0 0 0 0'
      - series: 'dbprov_audit_sink_up{sink="es",pod="hub-0"}'
        values: '1x10'
      - series: 'dbprov_audit_blocked{pod="hub-0"}'
        values: '0 0 1 1 1 1'
    alert_rule_test:
      - eval_time: 2m
        alertname: DbprovHubLeaders
      - eval_time: 5m
        alertname: DbprovHubLeaders
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: 0 dbprov hub replicas lead
              description: Exactly one hub replica should hold the Lease; with none, no intent is dispatched and no agent is served.
              runbook_url: https://example.com/ops#dbprovhubleaders
      - eval_time: 5m
        alertname: DbprovAgentDisconnected
      - eval_time: 8m
        alertname: DbprovAgentDisconnected
        exp_alerts:
          - exp_labels: {severity: critical, cluster: a}
            exp_annotations:
              summary: dbprov agent of cluster a is not connected
              description: "No agent stream from cluster a for 5 minutes: nothing in it is provisioned, probed or backed up."
              runbook_url: https://example.com/ops#dbprovagentdisconnected
      - eval_time: 12m
        alertname: DbprovInstanceUnreachable
        exp_alerts:
          - exp_labels: {severity: critical, kind: DatabaseInstance, namespace: ns, name: pg}
            exp_annotations:
              summary: DatabaseInstance ns/pg is not reachable
              description: "Its agent could not connect to the database server for 10 minutes; see the resource's Ready condition."
              runbook_url: https://example.com/ops#dbprovinstanceunreachable
      - eval_time: 45m
        alertname: DbprovScheduledBackupMissing
      - eval_time: 60m
        alertname: DbprovScheduledBackupMissing
        exp_alerts:
          - exp_labels: {severity: critical, namespace: ns, schedule: nightly}
            exp_annotations:
              summary: No successful backup of schedule ns/nightly within two intervals
              description: The last successful backup of ns/nightly finished 1h 0m 0s ago.
              runbook_url: https://example.com/ops#dbprovscheduledbackupmissing
      - eval_time: 4m
        alertname: DbprovBackupFailed
        exp_alerts:
          - exp_labels: {severity: warning, reason: StorageError}
            exp_annotations:
              summary: dbprov backups failed (StorageError)
              description: 1 backups failed with reason StorageError in the last 30 minutes.
              runbook_url: https://example.com/ops#dbprovbackupfailed
      - eval_time: 3m
        alertname: DbprovAuditRecordsDropped
        exp_alerts:
          - exp_labels: {severity: critical, sink: loki}
            exp_annotations:
              summary: dbprov dropped audit records of sink loki
              description: "5 audit records were dropped for sink loki in the last 10 minutes: its buffer (bufferRecords) was full and whenFull is dropOldest. They are gone from that sink for good; find why it does not deliver (DbprovAuditSinkDown, the hub's log)."
              runbook_url: https://example.com/ops#audit-records-dropped
      - eval_time: 14m
        alertname: DbprovAuditRecordsDropped
      - eval_time: 4m
        alertname: DbprovAuditSinkDown
      - eval_time: 8m
        alertname: DbprovAuditSinkDown
        exp_alerts:
          - exp_labels: {severity: warning, sink: loki, pod: hub-0}
            exp_annotations:
              summary: dbprov audit sink loki cannot deliver
              description: "Deliveries of hub-0 to audit sink loki have failed for 5 minutes (dbprov_audit_records_retried_total says why). Records wait in the queue; when its bufferRecords are reached they are dropped (dropOldest) or new operations stop (block)."
              runbook_url: https://example.com/ops#audit-sink-down
      - eval_time: 4m
        alertname: DbprovAuditBlocked
        exp_alerts:
          - exp_labels: {severity: critical, pod: hub-0}
            exp_annotations:
              summary: "dbprov operations are stopped: an audit sink's buffer is full"
              description: "A whenFull: block audit sink of hub-0 has reached its bufferRecords: no new database operation is sent until it delivers. Resources wait with reason AuditBlocked."
              runbook_url: https://example.com/ops#audit-blocked
      - eval_time: 1m
        alertname: DbprovCertificateExpiring
        exp_alerts:
          - exp_labels: {severity: warning, certificate: serving, pod: hub-0}
            exp_annotations:
              summary: dbprov serving certificate of hub-0 expires soon
              description: It expires in 9d 23h 59m 0s.
              runbook_url: https://example.com/ops#dbprovcertificateexpiring
"#;

#[test]
fn alert_rules_and_dashboard_queries_pass_promtool_and_use_documented_metrics() {
    let promtool = require!(tools::find("promtool"));
    let dir = WorkDir::new("charts-rules").unwrap();
    let documented = documented_metrics();
    assert!(documented.len() > 20, "metrics table not found");
    let mut used = BTreeSet::new();
    for (chart, extra) in [("dbprov-hub", &[][..]), ("dbprov-agent", AGENT_REQUIRED)] {
        let args = [
            extra,
            &[
                "--set",
                "prometheusRule.enabled=true",
                "--set",
                "prometheusRule.runbookBaseUrl=https://example.com/ops",
            ],
        ]
        .concat();
        let (_, docs) = render(&dir, chart, &args);
        let rules = rules_file(&docs);
        used.extend(metric_names(&rules));
        // Every runbook link lands on a section of docs/operations.md.
        let anchors = runbook_anchors();
        for anchor in rules.split("https://example.com/ops#").skip(1).map(|t| {
            t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or_default()
        }) {
            assert!(
                anchors.contains(anchor),
                "{chart}: runbook_url #{anchor} is no heading of docs/operations.md ({anchors:?})"
            );
        }
        let path = write(&dir, &format!("{chart}-rules.yaml"), &rules);
        let mut cmd = std::process::Command::new(&promtool);
        cmd.args(["check", "rules", "--lint-fatal", &path]);
        let out = process::run(cmd, None).unwrap();
        ok(&format!("promtool check rules ({chart})"), &out);
        eprintln!("{}", out.stdout.trim());
        if chart == "dbprov-hub" {
            write(&dir, "hub-rules.yaml", &rules);
        }

        // Dashboard queries, as recording rules: promtool parses each one.
        let board = std::fs::read_to_string(
            helm::chart(chart)
                .join("dashboards")
                .join(format!("{chart}.json")),
        )
        .unwrap();
        let board: Value = serde_json::from_str(&board).unwrap();
        let mut records = Vec::new();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                used.extend(metric_names(expr));
                records.push(serde_json::json!({
                    "record": format!("dashboard:panel_{}_{}", panel["id"], target["refId"].as_str().unwrap()),
                    "expr": expr,
                }));
            }
        }
        let path = write(
            &dir,
            &format!("{chart}-dashboard-queries.yaml"),
            &serde_yaml::to_string(
                &serde_json::json!({"groups": [{"name": "dashboard", "rules": records}]}),
            )
            .unwrap(),
        );
        let mut cmd = std::process::Command::new(&promtool);
        cmd.args(["check", "rules", &path]);
        ok(
            &format!("promtool check rules (dashboard of {chart})"),
            &process::run(cmd, None).unwrap(),
        );
    }
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "rules or dashboards use metrics docs/operations.md does not list: {undocumented:?}"
    );

    let tests = write(&dir, "hub-rule-tests.yaml", HUB_RULE_TESTS);
    let mut cmd = std::process::Command::new(&promtool);
    cmd.current_dir(dir.path()).args(["test", "rules", &tests]);
    ok("promtool test rules", &process::run(cmd, None).unwrap());
}

/// Runs one command line of the install guide (`dbprov-hub`, `kubectl` or `helm`, words
/// separated by spaces; `$HUB` / `$AGENT` are the charts' directories) with the KUBECONFIG of
/// `env` and helm's state in `dir`; fails with its output.
fn sh(env: &KubeEnv, dir: &WorkDir, line: &str) -> String {
    let (hub, agent) = (helm::chart("dbprov-hub"), helm::chart("dbprov-agent"));
    let line = line
        .replace("$HUB", &hub.display().to_string())
        .replace("$AGENT", &agent.display().to_string());
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut cmd = match words[0] {
        "helm" => helm::helm(dir).unwrap(),
        "kubectl" => env.kubectl().unwrap(),
        program => std::process::Command::new(dbprov_tests::dbprov::binary(program).unwrap()),
    };
    cmd.env("KUBECONFIG", env.kubeconfig())
        .current_dir(dir.path())
        .args(&words[1..]);
    let out = process::run(cmd, None).unwrap();
    ok(&line, &out);
    out.stdout
}

/// docs/install.md, step by step, against a real apiserver (no kubelet runs here, so pods are
/// created but never start): certificates from `dbprov-hub certs`, the Secrets, `helm
/// install` of both charts, a ManagedCluster, `helm upgrade`, `helm uninstall` — which keeps
/// the CRDs and the resources.
#[tokio::test]
async fn the_install_guide_installs_upgrades_and_uninstalls_keeping_crds_and_resources() {
    let env = require!(KubeEnv::start().await);
    let dir = WorkDir::new("install-guide").unwrap();
    let run = |line: &str| sh(&env, &dir, line);
    let hub_replicas =
        || run("kubectl -n dbprov-system get deploy dbprov-hub -o jsonpath={.spec.replicas}");
    let dbprov_crds = || {
        run("kubectl get crd -o name")
            .lines()
            .filter(|l| l.contains("dbops.dbprovision.io"))
            .count()
    };

    // 1. The hub.
    for line in [
        "dbprov-hub certs init --dir certs --trust-domain dbprov.local",
        "dbprov-hub certs issue --dir certs --server hub --dns dbprov-hub,dbprov-hub.dbprov-system.svc,hub.example.com",
        "kubectl create namespace dbprov-system",
        "kubectl -n dbprov-system create secret generic dbprov-hub-tls --from-file=tls.crt=certs/hub.crt --from-file=tls.key=certs/hub.key --from-file=ca.crt=certs/ca.crt",
    ] {
        run(line);
    }
    let notes = run("helm install dbprov-hub $HUB -n dbprov-system");
    assert!(notes.contains("Register a workload cluster"), "{notes}");
    assert_eq!(dbprov_crds(), 15);
    assert_eq!(hub_replicas(), "2");

    // 2. A workload cluster.
    std::fs::write(
        dir.join("mc.yaml"),
        "apiVersion: dbops.dbprovision.io/v1alpha1\nkind: ManagedCluster\nmetadata:\n  name: workload-a\nspec: {}\n",
    )
    .unwrap();
    run("kubectl apply -f mc.yaml");

    // 3. Its agent, here in the same apiserver (its own namespace) for brevity.
    for line in [
        "dbprov-hub certs issue --dir certs --cluster workload-a",
        "kubectl create namespace dbprov-agent",
        "kubectl create namespace team-a",
        "kubectl create namespace team-b",
        "kubectl -n dbprov-agent create secret generic dbprov-agent-tls --from-file=tls.crt=certs/cluster-workload-a.crt --from-file=tls.key=certs/cluster-workload-a.key --from-file=ca.crt=certs/ca.crt",
    ] {
        run(line);
    }
    let notes = run(
        "helm install dbprov-agent $AGENT -n dbprov-agent --set clusterName=workload-a --set hub.address=https://hub.example.com:9443 --set rbac.namespaces={team-a,team-b}",
    );
    assert!(notes.contains("team-a,team-b"), "{notes}");
    let roles = run(
        "kubectl get roles -A -l app.kubernetes.io/name=dbprov-agent -o jsonpath={range.items[*]}{.metadata.namespace}{\",\"}{end}",
    );
    // The listed namespaces, and the agent's own for its operation journal.
    assert_eq!(roles, "dbprov-agent,team-a,team-b,");

    // Upgrade (and the CRDs, which helm does not upgrade).
    run("helm upgrade dbprov-hub $HUB -n dbprov-system --reuse-values --set replicaCount=3");
    assert_eq!(hub_replicas(), "3");
    run("kubectl apply --server-side -f $HUB/crds/");

    // Uninstall keeps the CRDs and the resources.
    run("helm uninstall dbprov-agent -n dbprov-agent");
    run("helm uninstall dbprov-hub -n dbprov-system");
    let left = run("kubectl -n dbprov-system get deploy,svc,sa -o name");
    assert!(!left.contains("dbprov-hub"), "{left}");
    assert_eq!(dbprov_crds(), 15, "CRDs are kept");
    let mcs = run("kubectl get managedclusters -o name");
    assert!(mcs.contains("workload-a"), "resources are kept: {mcs}");
}
