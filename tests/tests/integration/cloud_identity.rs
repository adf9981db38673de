//! Object-store credentials without static keys, with real parts only:
//! - IRSA without AWS: a workload apiserver that is an OIDC issuer (its discovery document
//!   and JWKS public), MinIO trusting it for `AssumeRoleWithWebIdentity`, a real
//!   ServiceAccount token from the TokenRequest API in a file, and the real agent with
//!   `AWS_ROLE_ARN` / `AWS_WEB_IDENTITY_TOKEN_FILE` / `AWS_ENDPOINT_URL_STS` and a storage
//!   spec without `secretRef`: a backup lands in MinIO and restores table for table; a token
//!   MinIO refuses (another audience) fails the backup with a message naming the fix; a
//!   second namespace the agent's `agentStorage.namespaces` does not list cannot use that
//!   identity (nor the agent's volumes), even with the first one's storage block.
//! - Azurite SAS: a container SAS in a Secret backs up and restores; an expired SAS and a
//!   value that is no SAS at all fail with messages naming the fix; so does S3 without a
//!   Secret from an agent without any AWS identity.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    Azurite, KubeEnv, Minio, backup_fixtures as fx,
    dbprov::{AgentOptions, AgentProcess},
    minio::OpenId,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";

async fn wait_phase(s: &Scenario, kind: &str, name: &str, phase: &str) -> Value {
    let v = s
        .wait_for(kind, name, phase, |v| {
            let p = &v["status"]["phase"];
            p == phase || (p == "Failed" && phase != "Failed")
        })
        .await;
    assert_eq!(
        v["status"]["phase"], phase,
        "{kind} {name}: {}",
        v["status"]
    );
    v
}

/// Waits until the backup's Ready reason is `reason` and returns its status message.
async fn failure(s: &Scenario, name: &str, reason: &str) -> String {
    let v = s
        .wait_for("DatabaseBackup", name, reason, |v| {
            ready_reason(v) == reason
        })
        .await;
    v["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn backup(ns: &str, name: &str, database: &str, storage: Value) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": name, "namespace": ns},
           "spec": {"databaseRef": {"name": database}, "storage": storage}})
}

fn restore(ns: &str, name: &str, backup: &str, target: &str) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": name, "namespace": ns},
           "spec": {"backupRef": {"name": backup}, "target": {"databaseName": target}}})
}

#[tokio::test]
async fn irsa_web_identity_from_a_service_account_token_backs_up_to_minio_and_restores() {
    const NS: &str = "irsa";
    dbprov_tests::init_crypto();
    let s = dbprov_tests::require!(Scenario::start(NS).await);
    // The "EKS cluster": its apiserver is the OIDC issuer MinIO (the "AWS STS") trusts.
    let issuer = KubeEnv::start_oidc_issuer().await.unwrap();
    let minio = Minio::start_with_openid(OpenId {
        config_url: issuer.oidc_discovery_url(),
        client_id: OpenId::CLIENT_ID.into(),
        ca_pem: issuer.ca_pem().to_owned(),
    })
    .await
    .unwrap();
    minio.create_bucket(fx::BUCKET).await.unwrap();

    dbprov_tests::manifests::create_namespaces(&issuer.client(), &[NS])
        .await
        .unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "dbprov-agent"}})).unwrap();
    kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(issuer.client(), NS)
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    let pg_admin = serde_json::from_value(json!({"metadata": {"name": "pg-admin"},
        "stringData": {"username": s.pg.user(), "password": s.pg.password()}}))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(issuer.client(), NS)
        .create(&Default::default(), &pg_admin)
        .await
        .unwrap();

    // What the kubelet projects: a token for the audience MinIO expects, in a file.
    let token = issuer
        .service_account_token(NS, "dbprov-agent", OpenId::CLIENT_ID, 3600)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();

    s.apply(json!({"apiVersion": API, "kind": "ManagedCluster",
                   "metadata": {"name": "aws"}, "spec": {}}))
        .await;
    let env: Vec<(String, String)> = [
        ("AWS_ROLE_ARN", Minio::ROLE_ARN.to_owned()),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", minio.endpoint()),
        // No static keys or profile may stand in for the web identity.
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("AWS_PROFILE", String::new()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        // The chart's agentStorage.namespaces: only this namespace may use the identity.
        ("DBPROV_AGENT_STORAGE_NAMESPACES", NS.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let agent = AgentProcess::start_configured(
        issuer.kubeconfig(),
        &env,
        &s.pki,
        &s.hub.addr,
        &AgentOptions {
            cluster_name: "aws".into(),
            cert: s.pki.cluster("aws").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();

    fx::seed_postgres(&s.pg.url("postgres"), &s.pg.url("orders"), "orders")
        .await
        .unwrap();
    let orders = fx::digest_postgres(&s.pg.url("orders")).await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg-aws", "namespace": NS},
        "spec": {"engine": "postgres", "clusterRef": {"name": "aws"},
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.wait_ready("DatabaseInstance", "pg-aws").await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg-aws"}, "name": "orders"}}))
        .await;
    s.wait_ready("Database", "orders").await;

    // No secretRef: the agent's web identity.
    let storage = json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": Minio::REGION,
        "endpoint": minio.endpoint(), "forcePathStyle": true, "prefix": "irsa"}});
    s.apply(backup(NS, "irsa", "orders", storage.clone())).await;
    let done = wait_phase(&s, "DatabaseBackup", "irsa", "Completed").await;
    let path = done["status"]["backup"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(path.starts_with("irsa/"), "{path}");
    // The artifact is really in MinIO (read back with the root account).
    let head = minio
        .s3_client()
        .head_object()
        .bucket(fx::BUCKET)
        .key(&path)
        .send()
        .await
        .unwrap();
    assert!(head.content_length().unwrap_or(0) > 0);
    // The source is named in the agent's log, the token is not.
    let log = agent.log();
    assert!(
        log.contains("AWS web identity (IRSA)") && log.contains(Minio::ROLE_ARN),
        "{log}"
    );
    assert!(!log.contains(&token));

    s.apply(restore(NS, "r-irsa", "irsa", "orders_irsa")).await;
    wait_phase(&s, "DatabaseRestore", "r-irsa", "Completed").await;
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_irsa")).await.unwrap(),
        orders
    );

    // A token MinIO refuses (issued for another audience): the kubelet would have
    // projected it if the chart's cloudIdentity.token.audience were wrong.
    let wrong = issuer
        .service_account_token(NS, "dbprov-agent", "sts.amazonaws.com", 3600)
        .await
        .unwrap();
    std::fs::write(&token_file, &wrong).unwrap();
    s.apply(backup(NS, "irsa-wrong-audience", "orders", storage.clone()))
        .await;
    let message = failure(&s, "irsa-wrong-audience", "StorageError").await;
    assert!(
        message.contains("AWS web identity (IRSA)")
            && message.contains("token audience")
            && message.contains("cloudIdentity.token.audience"),
        "{message}"
    );
    assert!(!message.contains(&wrong) && !message.contains(minio.secret_key()));

    // Garbled token.
    std::fs::write(&token_file, "not-a-jwt").unwrap();
    s.apply(backup(NS, "irsa-garbled", "orders", storage.clone()))
        .await;
    let message = failure(&s, "irsa-garbled", "StorageError").await;
    assert!(
        message.contains("AWS web identity (IRSA)") && message.contains("check that the role"),
        "{message}"
    );

    // Another namespace on the same agent may not use its identity (nor its volumes): with
    // the same storage block it could read and delete this namespace's backups.
    const OTHER: &str = "irsa-other";
    std::fs::write(&token_file, &token).unwrap();
    dbprov_tests::manifests::create_namespaces(&s.mgmt.client(), &[OTHER])
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&issuer.client(), &[OTHER])
        .await
        .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(issuer.client(), OTHER)
        .create(&Default::default(), &pg_admin)
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg-aws", "namespace": OTHER},
        "spec": {"engine": "postgres", "clusterRef": {"name": "aws"},
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "other", "namespace": OTHER},
                   "spec": {"instanceRef": {"name": "pg-aws"}, "name": "orders_other"}}))
        .await;
    s.wait_for_in(OTHER, "Database", "other", "Ready", |v| {
        v["status"]["phase"] == "Ready"
    })
    .await;
    // Mounted, so without the check the backup would land there.
    let volume = agent.volumes.join("vol");
    std::fs::create_dir_all(&volume).unwrap();
    let pvc = json!({"type": "pvc", "pvc": {"claimName": "vol"}});
    for (name, storage, what) in [
        ("steal-s3", storage.clone(), "agent's own AWS identity"),
        ("steal-pvc", pvc, "volume mounted into the agent"),
    ] {
        s.apply(backup(OTHER, name, "other", storage)).await;
        let v = s
            .wait_for_in(OTHER, "DatabaseBackup", name, "InvalidSpec", |v| {
                ready_reason(v) == "InvalidSpec"
            })
            .await;
        let message = v["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(what)
                && message.contains("namespace irsa-other may not use")
                && message.contains("agentStorage.namespaces"),
            "{message}"
        );
    }
    assert_eq!(std::fs::read_dir(&volume).unwrap().count(), 0);
    // Nor read the first namespace's artifact by naming its key (`fromPath`).
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
        "metadata": {"name": "steal-restore", "namespace": OTHER},
        "spec": {"fromPath": {"backupPath": path, "storage": storage},
                 "target": {"instanceRef": {"name": "pg-aws"}, "databaseName": "stolen"}}}))
        .await;
    let v = s
        .wait_for_in(
            OTHER,
            "DatabaseRestore",
            "steal-restore",
            "InvalidSpec",
            |v| ready_reason(v) == "InvalidSpec",
        )
        .await;
    let message = v["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("agent's own AWS identity") && message.contains("agentStorage.namespaces"),
        "{message}"
    );
    let stolen =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname = 'stolen'")
            .fetch_one(
                &mut sqlx::PgConnection::connect(&s.pg.url("postgres"))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(stolen, 0, "the refused restore created its target");
    let keys = minio
        .s3_client()
        .list_objects_v2()
        .bucket(fx::BUCKET)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = keys.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.iter().all(|k| !k.contains(OTHER)), "{keys:?}");
    drop(agent);
}

#[tokio::test]
async fn azurite_sas_backs_up_and_restores_and_bad_sas_or_no_identity_name_the_fix() {
    const NS: &str = "sas";
    dbprov_tests::init_crypto();
    let s = dbprov_tests::require!(Scenario::start(NS).await);
    let azurite = Azurite::start().await.unwrap();
    azurite
        .blob_service_client()
        .container_client("sas-backups")
        .create()
        .await
        .unwrap();
    let sas = azurite
        .container_sas(
            "sas-backups",
            time::OffsetDateTime::now_utc() + time::Duration::hours(2),
        )
        .await
        .unwrap();
    let expired = azurite
        .container_sas(
            "sas-backups",
            time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        )
        .await
        .unwrap();
    for (name, value) in [
        ("azure-sas", sas.as_str()),
        ("azure-sas-expired", expired.as_str()),
        ("azure-sas-garbled", "this is not a SAS token"),
    ] {
        s.put_workload_secret(NS, name, json!({"AZURE_STORAGE_SAS_TOKEN": value}))
            .await;
    }
    fx::seed_postgres(&s.pg.url("postgres"), &s.pg.url("orders"), "orders")
        .await
        .unwrap();
    let orders = fx::digest_postgres(&s.pg.url("orders")).await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "orders"}}))
        .await;
    s.wait_ready("Database", "orders").await;
    let storage = |secret: &str| {
        json!({"type": "azure", "azure": {"storageAccount": Azurite::ACCOUNT,
            "container": "sas-backups", "prefix": "sas", "endpoint": azurite.blob_endpoint(),
            "secretRef": {"name": secret}}})
    };

    s.apply(backup(NS, "sas", "orders", storage("azure-sas")))
        .await;
    let done = wait_phase(&s, "DatabaseBackup", "sas", "Completed").await;
    let path = done["status"]["backup"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = azurite
        .blob_service_client()
        .container_client("sas-backups")
        .blob_client(&path)
        .get_properties()
        .await
        .unwrap();
    assert!(blob.blob.properties.content_length > 0);
    s.apply(restore(NS, "r-sas", "sas", "orders_sas")).await;
    wait_phase(&s, "DatabaseRestore", "r-sas", "Completed").await;
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_sas")).await.unwrap(),
        orders
    );

    s.apply(backup(
        NS,
        "sas-expired",
        "orders",
        storage("azure-sas-expired"),
    ))
    .await;
    let message = failure(&s, "sas-expired", "StorageError").await;
    assert!(
        message.contains("SAS token from Secret azure-sas-expired")
            && message.contains("issue a new one"),
        "{message}"
    );
    assert!(
        !message.contains(&expired) && !message.contains("sig="),
        "{message}"
    );

    s.apply(backup(
        NS,
        "sas-garbled",
        "orders",
        storage("azure-sas-garbled"),
    ))
    .await;
    let message = failure(&s, "sas-garbled", "InvalidSpec").await;
    assert!(
        message.contains("is not a SAS token") && message.contains("put the token there"),
        "{message}"
    );

    // S3 without a Secret from an agent with no AWS identity in its environment (the
    // scenario's): the chain ends at instance metadata, which answers nothing off EC2, and
    // the message says what to set. (On an EC2 host with an instance profile the
    // credentials would be found and the backup would fail on the closed endpoint instead.)
    let storage = json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": "us-east-1",
        "endpoint": "http://127.0.0.1:9", "forcePathStyle": true}});
    s.apply(backup(NS, "no-identity", "orders", storage)).await;
    let message = failure(&s, "no-identity", "StorageError").await;
    assert!(
        message.contains("EC2 instance metadata")
            && message.contains("set storage.s3.secretRef")
            && message.contains("eks.amazonaws.com/role-arn"),
        "{message}"
    );
}

/// The agent chart's `cloudIdentity` values: the annotations and pod label each cloud's
/// webhook keys on, and, for clusters without one, a projected token with the configured
/// audience, path and expiry plus the variables the agent's chain reads. Bad values are
/// refused with a message naming them.
#[test]
fn agent_chart_wires_service_account_annotations_and_a_projected_token() {
    use dbprov_tests::{helm, process::WorkDir};
    dbprov_tests::require!(dbprov_tests::tools::find("helm"));
    let dir = WorkDir::new("chart-cloud-identity").unwrap();
    let base = [
        "--set",
        "clusterName=aws",
        "--set",
        "hub.address=https://hub.example:9443",
    ];
    let render = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        helm::template(&dir, "dbprov-agent", "dbprov-agent", "dbprov-system", &args).unwrap()
    };
    let out = render(&[
        "--set",
        "cloudIdentity.aws.roleArn=arn:aws:iam::123456789012:role/backups",
        "--set",
        "cloudIdentity.aws.stsEndpoint=https://minio.storage:9000",
        "--set",
        "cloudIdentity.gcp.serviceAccount=backups@p.iam.gserviceaccount.com",
        "--set",
        "cloudIdentity.azure.clientId=11111111-2222-3333-4444-555555555555",
        "--set",
        "cloudIdentity.azure.tenantId=66666666-7777-8888-9999-000000000000",
        "--set",
        "cloudIdentity.token.enabled=true",
        "--set",
        "cloudIdentity.token.audience=dbprov-minio-sts",
        "--set",
        "cloudIdentity.token.expirationSeconds=3600",
        "--set",
        "cloudIdentity.token.mountPath=/var/run/secrets/sts",
        "--set",
        "serviceAccount.annotations.team=backup",
        "--set",
        "extraEnv[0].name=AWS_EC2_METADATA_DISABLED",
        "--set-string",
        "extraEnv[0].value=true",
    ]);
    assert!(out.ok, "{}", out.stderr);
    let docs = helm::documents(&out.stdout).unwrap();
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(
        sa["metadata"]["annotations"],
        json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/backups",
               "iam.gke.io/gcp-service-account": "backups@p.iam.gserviceaccount.com",
               "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
               "team": "backup"})
    );
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cloud-identity-token")
        .unwrap();
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "dbprov-minio-sts", "expirationSeconds": 3600, "path": "token"})
    );
    let container = &pod["spec"]["containers"][0];
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "cloud-identity-token"
                && m["mountPath"] == "/var/run/secrets/sts"
                && m["readOnly"] == true)
    );
    let env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for (name, value) in [
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/backups"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/sts/token"),
        ("AWS_ENDPOINT_URL_STS", "https://minio.storage:9000"),
        ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
        ("AZURE_TENANT_ID", "66666666-7777-8888-9999-000000000000"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/sts/token"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }

    // Annotation only (EKS/GKE/AKS webhooks inject the rest): no token volume, no AWS_* env.
    let out = render(&[
        "--set",
        "cloudIdentity.aws.roleArn=arn:aws:iam::123456789012:role/backups",
    ]);
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.contains("cloud-identity-token") && !out.stdout.contains("AWS_ROLE_ARN"));
    // Defaults: nothing of it.
    let out = render(&[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.contains("eks.amazonaws.com") && !out.stdout.contains("azure.workload"));

    // Who may use the agent's identity and volumes: the release namespace unless listed.
    let storage_namespaces = |out: &dbprov_tests::process::Output| {
        let docs = helm::documents(&out.stdout).unwrap();
        let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        deploy["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "DBPROV_AGENT_STORAGE_NAMESPACES")
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(storage_namespaces(&out).as_deref(), Some("dbprov-system"));
    let out = render(&["--set", "agentStorage.namespaces={team-a,team-b}"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(storage_namespaces(&out).as_deref(), Some("team-a,team-b"));
    let out = render(&["--set", "agentStorage.namespaces={*}"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(storage_namespaces(&out).as_deref(), Some("*"));

    for (extra, text) in [
        (
            vec![
                "--set",
                "cloudIdentity.token.enabled=true",
                "--set",
                "cloudIdentity.azure.clientId=c",
            ],
            "cloudIdentity.azure.tenantId is required",
        ),
        (
            vec!["--set", "cloudIdentity.token.expirationSeconds=60"],
            "expirationSeconds",
        ),
        (
            vec!["--set", "cloudIdentity.token.fileName=a/b"],
            "fileName",
        ),
        (vec!["--set", "cloudIdentity.aws.rolearn=x"], "rolearn"),
        (
            vec!["--set", "agentStorage.namespaces={Team_A}"],
            "agentStorage",
        ),
    ] {
        let out = render(&extra);
        assert!(!out.ok, "{extra:?} was accepted");
        assert!(out.stderr.contains(text), "{extra:?}: {}", out.stderr);
    }
}
