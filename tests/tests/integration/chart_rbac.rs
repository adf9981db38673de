//! The binaries under the RBAC their Helm charts ship: the hub runs with a token of the hub
//! chart's ServiceAccount in the management cluster, the agent with a token of the agent
//! chart's ServiceAccount in the workload cluster (TokenRequest API, as a pod's projected
//! token), each bound to exactly the roles `helm template` renders. A provisioning scenario
//! runs through (instances, database, role, user with a generated Secret, grant, backup,
//! restore, a schedule with retention, failures, deletions), then the apiservers' audit logs
//! show that nothing was forbidden and that every verb the charts grant was used.
//! The same run checks that every metric docs/operations.md lists is on the `/metrics` of the
//! binary it names, and prints the processes' peak memory (the charts' requests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, path::Path, time::Duration};

use dbprov_tests::{
    KubeEnv,
    dbprov::{peak_rss_kib, scrape},
    helm,
    process::WorkDir,
    require,
    scenario::{CHART_NAMESPACE, Scenario, ScenarioOptions, eventually, ready_reason},
    tools,
};
use serde_json::{Value, json};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "shop";

/// (apiGroup, resource or resource/subresource, verb) → how many requests, and the
/// forbidden ones, of `user` in an audit log.
struct Usage {
    used: BTreeMap<(String, String, String), usize>,
    forbidden: Vec<String>,
}

fn usage(log: &Path, user: &str) -> Usage {
    let text = std::fs::read_to_string(log).unwrap();
    let mut used = BTreeMap::new();
    let mut forbidden = Vec::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["user"]["username"] != user {
            continue;
        }
        let Some(obj) = e.get("objectRef") else {
            continue;
        };
        let mut resource = obj["resource"].as_str().unwrap_or_default().to_owned();
        if let Some(sub) = obj["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let key = (
            obj["apiGroup"].as_str().unwrap_or_default().to_owned(),
            resource,
            e["verb"].as_str().unwrap_or_default().to_owned(),
        );
        if e["responseStatus"]["code"] == 403 {
            forbidden.push(format!(
                "{key:?} {}/{}: {}",
                obj["namespace"].as_str().unwrap_or_default(),
                obj["name"].as_str().unwrap_or_default(),
                e["responseStatus"]["message"]
            ));
        }
        // A server-side apply that creates the object is audited as `patch` (201 Created)
        // but also authorized as `create` — which the agent needed for new user Secrets.
        if key.2 == "patch" && e["responseStatus"]["code"] == 201 {
            *used
                .entry((key.0.clone(), key.1.clone(), "create".to_owned()))
                .or_insert(0) += 1;
        }
        *used.entry(key).or_insert(0) += 1;
    }
    Usage { used, forbidden }
}

/// The rules the chart renders (ClusterRoles and Roles).
fn granted_rules(chart: &str, args: &[&str]) -> Vec<Value> {
    let dir = WorkDir::new("rbac-render").unwrap();
    let out = helm::template(&dir, chart, chart, CHART_NAMESPACE, args).unwrap();
    assert!(out.ok, "{}", out.stderr);
    helm::documents(&out.stdout)
        .unwrap()
        .into_iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Each verb of each rule was used on at least one of the rule's resources; `list` and
/// `watch` (which the controllers start for every kind at once) on every resource.
fn unused_grants(rules: &[Value], usage: &Usage) -> Vec<String> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut unused = Vec::new();
    for rule in rules {
        let groups = strs(&rule["apiGroups"]);
        let resources = strs(&rule["resources"]);
        for verb in strs(&rule["verbs"]) {
            let used_on: Vec<&String> = resources
                .iter()
                .filter(|r| {
                    groups.iter().any(|g| {
                        usage
                            .used
                            .contains_key(&(g.clone(), (*r).clone(), verb.clone()))
                    })
                })
                .collect();
            if verb == "list" || verb == "watch" {
                for r in &resources {
                    if !used_on.contains(&r) {
                        unused.push(format!("{verb} {r}"));
                    }
                }
            } else if used_on.is_empty() {
                unused.push(format!("{verb} on any of {resources:?}"));
            }
        }
    }
    unused
}

async fn wait_gone(s: &Scenario, kind: &str, name: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{kind} {name} deleted"),
        || async { s.get(kind, name).await.is_none().then_some(()) },
    )
    .await;
}

async fn wait_phase(s: &Scenario, kind: &str, name: &str, phase: &str) -> Value {
    s.wait_for(kind, name, phase, |v| v["status"]["phase"] == phase)
        .await
}

#[tokio::test]
async fn hub_and_agent_work_under_the_chart_rbac_and_use_all_of_it() {
    dbprov_tests::init_crypto();
    require!(tools::find("helm"));
    let s = match Scenario::start_with(NS, ScenarioOptions { chart_rbac: true }).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() && !tools::in_ci() => return,
        Err(e) => panic!("{e}"),
    };
    // The instances became Ready already: the hub watched and patched them, the agent read
    // their credential Secrets, both with the charts' tokens. The charts' environment took
    // effect: JSON logs, the Lease of leaderElection.leaseName in the release namespace.
    for (who, log) in [("hub", s.hub.log()), ("agent", s.agent.log())] {
        let line = log.lines().next().unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "{who} does not log JSON (logFormat: json): {line}"
        );
    }
    kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        s.mgmt.client(),
        CHART_NAMESPACE,
    )
    .get("dbprov-hub-leader")
    .await
    .unwrap();
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS);
    for (name, data) in [
        ("aes-key", json!({"key": "cd".repeat(32)})),
        ("other-key", json!({"key": "ef".repeat(32)})),
        (
            "bad-admin",
            json!({"username": "postgres", "password": "wrong"}),
        ),
        (
            "s3-creds",
            json!({"AWS_ACCESS_KEY_ID": "dbprov", "AWS_SECRET_ACCESS_KEY": "not-a-real-key"}),
        ),
    ] {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    std::fs::create_dir_all(s.agent.volumes.join("backup-vol")).unwrap();

    // Provisioning: database (with init SQL from a ConfigMap the agent reads), role, user
    // with a generated Secret, grant.
    let init: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "shop-init"}, "data": {"init.sql": "CREATE TABLE rbac_init (id int)"}}),
    )
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(s.workload.client(), NS)
        .create(&Default::default(), &init)
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "shop", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "shop", "deletionProtection": false,
                            "initSQL": {"configMapRef": {"name": "shop-init", "key": "init.sql"}}}}))
        .await;
    let shop = s.wait_ready("Database", "shop").await;
    assert_eq!(shop["status"]["initSQL"]["applied"], true, "{shop}");
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole",
                   "metadata": {"name": "shop-readers", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "roleName": "shop_readers",
                            "postgres": {"grants": [{"database": "shop", "schema": "public", "privileges": ["USAGE"]}]}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                   "metadata": {"name": "app", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                            "passwordSecret": {"secretName": "app-credentials"}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
                   "metadata": {"name": "app-shop", "namespace": NS},
                   "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                            "postgres": {"roles": ["shop_readers"],
                                         "grants": [{"database": "shop", "privileges": ["CONNECT"]}]}}}))
        .await;
    s.wait_ready("DatabaseRole", "shop-readers").await;
    s.wait_ready("DatabaseUser", "app").await;
    s.wait_ready("DatabaseGrant", "app-shop").await;
    let creds = s.workload_secret("app-credentials").await.unwrap();
    assert_eq!(creds["username"], "shop_app");

    // Backup (AES key from a Secret) to a volume, and a restore of it.
    let pvc = json!({"type": "pvc", "pvc": {"claimName": "backup-vol", "subPath": "rbac"}});
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": "shop-1", "namespace": NS},
                   "spec": {"databaseRef": {"name": "shop"}, "storage": pvc,
                            "encryption": {"enabled": true, "algorithm": "aes-256-gcm", "secretRef": {"name": "aes-key", "key": "key"}}}}))
        .await;
    wait_phase(&s, "DatabaseBackup", "shop-1", "Completed").await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": "shop-copy", "namespace": NS},
                   "spec": {"backupRef": {"name": "shop-1"}, "target": {"databaseName": "shop_copy"},
                            "encryption": {"enabled": true, "algorithm": "aes-256-gcm", "secretRef": {"name": "aes-key", "key": "key"}}}}))
        .await;
    wait_phase(&s, "DatabaseRestore", "shop-copy", "Completed").await;

    // After the backup: a restore copies table grants along, and the user could not be
    // dropped at the end while its grant lived on in the copy.
    // A migration from a ConfigMap of the workload cluster, and a grant that waits for it
    // (the hub reads the migration's status).
    s.apply_workload_data(
        "ConfigMap",
        "shop-migrations",
        &[(
            "V1__orders.sql",
            "CREATE TABLE orders (id int PRIMARY KEY);\n",
        )],
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseMigration",
                   "metadata": {"name": "shop-schema", "namespace": NS},
                   "spec": {"databaseRef": {"name": "shop"}, "interval": "0s",
                            // initSQL made tables already: the history starts at a baseline.
                            "flyway": {"baselineOnMigrate": true, "baselineVersion": "0"},
                            "source": {"configMaps": [{"name": "shop-migrations"}]}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
                   "metadata": {"name": "app-orders", "namespace": NS},
                   "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                            "after": [{"migration": "shop-schema", "version": "1"}],
                            "postgres": {"grants": [{"database": "shop", "schema": "public", "tables": ["orders"], "privileges": ["SELECT"]}]}}}))
        .await;
    wait_phase(&s, "DatabaseMigration", "shop-schema", "Completed").await;
    s.wait_ready("DatabaseGrant", "app-orders").await;

    // A schedule: it creates its backups and retention (keepLast 1) deletes the older ones.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "often", "namespace": NS},
        "spec": {"schedule": "@every 10s", "timezone": "UTC", "deletionProtection": false,
                 "retention": {"keepLast": 1},
                 "template": {"spec": {"databaseRef": {"name": "shop"}, "storage": pvc}}}}))
        .await;
    eventually(
        Duration::from_secs(90),
        "the schedule's retention deleted a run",
        || async {
            let v = s.get("DatabaseBackupSchedule", "often").await?;
            v["status"]["message"]
                .as_str()?
                .contains("retention deleted")
                .then_some(())
        },
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "often", "namespace": NS},
        "spec": {"schedule": "@every 10s", "timezone": "UTC", "deletionProtection": false, "paused": true,
                 "retention": {"keepLast": 1},
                 "template": {"spec": {"databaseRef": {"name": "shop"}, "storage": pvc}}}}))
        .await;

    // Failures, so their metrics exist: a refused spec, a restore with the wrong key, an object store
    // that is not there (retried), an instance with a wrong password.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": "bad-cbc", "namespace": NS},
                   "spec": {"databaseRef": {"name": "shop"}, "storage": pvc,
                            "encryption": {"enabled": true, "algorithm": "aes-256-cbc", "secretRef": {"name": "aes-key", "key": "key"}}}}))
        .await;
    wait_phase(&s, "DatabaseBackup", "bad-cbc", "Failed").await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": "wrong-key", "namespace": NS},
                   "spec": {"backupRef": {"name": "shop-1"}, "target": {"databaseName": "never_created"},
                            "encryption": {"enabled": true, "algorithm": "aes-256-gcm", "secretRef": {"name": "other-key", "key": "key"}}}}))
        .await;
    wait_phase(&s, "DatabaseRestore", "wrong-key", "Failed").await;
    let closed = tools::free_port().unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": "no-store", "namespace": NS},
                   "spec": {"databaseRef": {"name": "shop"},
                            "storage": {"type": "s3", "s3": {"bucket": "backups", "region": "us-east-1",
                                        "endpoint": format!("http://127.0.0.1:{closed}"), "forcePathStyle": true,
                                        "secretRef": {"name": "s3-creds"}}}}}))
        .await;
    s.wait_for("DatabaseBackup", "no-store", "StorageError", |v| {
        ready_reason(v) == "StorageError"
    })
    .await;
    // The hub keeps one event recorder: the retried attempts of the same backup become a
    // series on one Event (patched), not a new object per attempt.
    eventually(
        Duration::from_secs(60),
        "the retried backup's events aggregated into a series",
        || async {
            let events =
                kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.mgmt.client(), NS)
                    .list(&Default::default())
                    .await
                    .ok()?;
            let storage: Vec<_> = events
                .items
                .iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("no-store")
                        && e.reason.as_deref() == Some("StorageError")
                })
                .collect();
            (storage.len() == 1 && storage[0].series.as_ref().is_some_and(|s| s.count >= 2))
                .then_some(())
        },
    )
    .await;
    // Tenancy refusals, so the hub's reads for them run under the chart's RBAC: another
    // namespace's backup of `shop` without a DatabaseReferenceGrant (the grants of `shop` are
    // listed), and a user of that namespace on an instance whose allowedNamespaces selects
    // by label (the namespace is read).
    let other: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "reports"}})).unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(s.mgmt.client())
        .create(&Default::default(), &other)
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": "foreign", "namespace": "reports"},
                   "spec": {"databaseRef": {"name": "shop", "namespace": NS}, "storage": pvc}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance", "metadata": {"name": "by-label", "namespace": NS},
                   "spec": {"engine": "postgres", "deletionProtection": false,
                            "connection": {"host": "127.0.0.1", "port": 1, "database": "postgres",
                                           "secretRef": {"name": "bad-admin"}},
                            "allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "shop"}}}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "outsider", "namespace": "reports"},
                   "spec": {"instanceRef": {"name": "by-label", "namespace": NS}, "username": "outsider"}}))
        .await;
    for (kind, name, reason) in [
        ("DatabaseBackup", "foreign", "ReferenceNotPermitted"),
        ("DatabaseUser", "outsider", "InstanceNotPermitted"),
    ] {
        s.wait_for_in("reports", kind, name, reason, |v| ready_reason(v) == reason)
            .await;
    }

    // A DatabasePolicy (audit: it refuses nothing here), so the hub's policy permissions run
    // under the chart's RBAC: every replica watches policies and namespaces, the leader
    // server-side applies the policy's ValidatingAdmissionPolicy and binding and writes the
    // policy's status; matching on engines makes it webhook-only, and the leader deletes them.
    let policy = |spec: Value| {
        json!({"apiVersion": API, "kind": "DatabasePolicy", "metadata": {"name": "rbac-labels"},
               "spec": spec})
    };
    s.apply(policy(json!({"enforcementAction": "audit",
                          "match": {"namespaces": [NS], "kinds": ["Database"]},
                          "requiredLabels": [{"key": "team"}]})))
        .await;
    let active = s
        .wait_for_in(
            "",
            "DatabasePolicy",
            "rbac-labels",
            "Active with its VAP",
            |v| {
                v["status"]["phase"] == "Active"
                    && v["status"]["validatingAdmissionPolicy"].is_string()
            },
        )
        .await;
    let vap_name = "dbprov-policy-rbac-labels";
    assert_eq!(
        active["status"]["validatingAdmissionPolicy"], vap_name,
        "{}",
        active["status"]
    );
    let vaps =
        kube::Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>::all(
            s.mgmt.client(),
        );
    let bindings = kube::Api::<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    >::all(s.mgmt.client());
    assert!(vaps.get_opt(vap_name).await.unwrap().is_some());
    assert!(bindings.get_opt(vap_name).await.unwrap().is_some());
    s.apply(policy(json!({"enforcementAction": "audit",
                          "match": {"namespaces": [NS], "kinds": ["Database"], "engines": ["postgres"]},
                          "requiredLabels": [{"key": "team"}]})))
        .await;
    s.wait_for_in("", "DatabasePolicy", "rbac-labels", "webhook-only", |v| {
        v["status"]["phase"] == "Active"
            && v["status"]["validatingAdmissionPolicy"].is_null()
            && v["status"]["admission"] == "webhook"
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the policy's ValidatingAdmissionPolicy and binding deleted",
        || async {
            (vaps.get_opt(vap_name).await.unwrap().is_none()
                && bindings.get_opt(vap_name).await.unwrap().is_none())
            .then_some(())
        },
    )
    .await;

    // What a platform engineer runs to see the clusters (HubAdmin/ListClusters, which the
    // hub answers from the ManagedCluster list).
    let admin = s.pki.admin("rbac-test").unwrap();
    let out = std::process::Command::new(tools::find("grpcurl").unwrap())
        .arg("-cacert")
        .arg(s.pki.ca_cert())
        .arg("-cert")
        .arg(&admin.cert)
        .arg("-key")
        .arg(&admin.key)
        .args(["-servername", "localhost", &s.hub.addr])
        .arg("dbprov.admin.v1.HubAdmin/ListClusters")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("\"default\""),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg-bad", "namespace": NS},
        "spec": {"engine": "postgres", "deletionProtection": false,
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "bad-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.wait_for("DatabaseInstance", "pg-bad", "AuthenticationFailed", |v| {
        ready_reason(v) == "AuthenticationFailed"
    })
    .await;

    // Deletions: the grant is revoked, the user dropped with its Secret (the agent deletes
    // what it wrote), the instance with a wrong password goes.
    s.delete("DatabaseGrant", "app-shop").await;
    wait_gone(&s, "DatabaseGrant", "app-shop").await;
    s.delete("DatabaseGrant", "app-orders").await;
    wait_gone(&s, "DatabaseGrant", "app-orders").await;
    // A migration's deletion undoes nothing: the hub only lets go of its finalizer.
    s.delete("DatabaseMigration", "shop-schema").await;
    wait_gone(&s, "DatabaseMigration", "shop-schema").await;
    s.delete("DatabaseUser", "app").await;
    wait_gone(&s, "DatabaseUser", "app").await;
    eventually(
        Duration::from_secs(30),
        "the user's Secret deleted",
        || async {
            s.workload_secret("app-credentials")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    s.delete("DatabaseInstance", "pg-bad").await;
    wait_gone(&s, "DatabaseInstance", "pg-bad").await;

    // Every documented metric is on its binary's /metrics.
    let hub_metrics = scrape(&s.hub.metrics_addr).await;
    let agent_metrics = scrape(&s.agent.metrics_addr).await;
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in doc.lines().filter(|l| l.starts_with("| `dbprov_")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cols[1].trim_matches('`');
        for binary in cols[2].split(',').map(str::trim) {
            let text = if binary == "hub" {
                &hub_metrics
            } else {
                &agent_metrics
            };
            checked += 1;
            let present = text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name));
            if !present {
                missing.push(format!("{name} ({binary})"));
            }
        }
    }
    assert!(checked > 25, "the metrics table was not found");
    assert!(
        missing.is_empty(),
        "documented metrics missing from /metrics: {missing:?}\nhub:\n{hub_metrics}\nagent:\n{agent_metrics}"
    );
    eprintln!("all {checked} documented metric/binary pairs present");
    // Prometheus naming: counters end in _total, histograms carry their unit.
    for text in [&hub_metrics, &agent_metrics] {
        for line in text.lines().filter(|l| l.starts_with("# TYPE dbprov_")) {
            let mut words = line.split_whitespace().skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" => assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{line}"
                ),
                "gauge" => assert!(!name.ends_with("_total"), "{line}"),
                other => panic!("unexpected metric type {other}: {line}"),
            }
        }
    }

    // RBAC: nothing forbidden, everything granted used.
    let cases: [(&str, &KubeEnv, &str, Vec<&str>); 2] = [
        ("dbprov-hub", &s.mgmt, "dbprov-hub", vec![]),
        (
            "dbprov-agent",
            &s.workload,
            "dbprov-agent",
            vec![
                "--set",
                "clusterName=default",
                "--set",
                "hub.address=https://127.0.0.1:9443",
                "--set",
                "rbac.namespaces={shop}",
            ],
        ),
    ];
    for (chart, env, account, args) in cases {
        let user = format!("system:serviceaccount:{CHART_NAMESPACE}:{account}");
        let u = usage(&env.audit_log(), &user);
        assert!(!u.used.is_empty(), "{user} made no requests");
        assert!(
            u.forbidden.is_empty(),
            "{chart}: the chart's RBAC is not enough:\n{}",
            u.forbidden.join("\n")
        );
        let mut unused = unused_grants(&granted_rules(chart, &args), &u);
        // Read only when the hub's watch of Namespaces does not hold a namespace yet (one
        // created moments before an object in it): a path this scenario cannot time.
        unused.retain(|g| g != "get on any of [\"namespaces\"]");
        assert!(
            unused.is_empty(),
            "{chart} grants what the scenario never used: {unused:?}\nused: {:?}",
            u.used.keys().collect::<Vec<_>>()
        );
        eprintln!(
            "{chart}: {} kinds of request, all allowed; every granted verb used:",
            u.used.len()
        );
        for ((group, resource, verb), n) in &u.used {
            eprintln!("  {n:>5}  {verb:<7} {group}/{resource}");
        }
    }
    eprintln!(
        "peak RSS: hub {} KiB, agent {} KiB",
        peak_rss_kib(s.hub.pid()),
        peak_rss_kib(s.agent.pid())
    );
}
