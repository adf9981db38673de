//! `dbprov-devenv`: runs dbprov locally — a management and a workload Kubernetes control plane,
//! PostgreSQL, MariaDB, MinIO, fake-gcs-server and Azurite, a development PKI, the hub and two
//! agents (ManagedClusters `workload-a` and `workload-b`), and sample resources — then prints
//! how to reach each part and stops everything on Ctrl-C. Started by `scripts/dev.sh`.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use dbprov_tests::{
    Azurite, FakeGcs, KubeEnv, MariaDb, Minio, Postgres,
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki},
    manifests::{self, Catalog},
};
use serde_json::json;

/// Runs dbprov's local environment until interrupted.
#[derive(Debug, Parser)]
#[command(name = "dbprov-devenv")]
struct Cli {
    /// Also write the connection details as shell `export` lines to this file (mode 0600).
    #[arg(long, env = "DBPROV_DEVENV_FILE")]
    env_file: Option<PathBuf>,
    /// Start everything, wait until the sample instances are Ready, print the summary and stop
    /// (a self-check).
    #[arg(long)]
    check: bool,
}

/// The examples directory (`docs/examples`), applied in file order.
fn examples_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples"))
}

/// Installs the CRDs, the admin Secrets (workload cluster) and `docs/examples` (management
/// cluster), with the instances pointed at the local servers. Returns the examples applied as
/// `(kind, name)`.
async fn apply_examples(
    mgmt: &KubeEnv,
    workload: &KubeEnv,
    pg: &Postgres,
    maria: &MariaDb,
    minio: &Minio,
) -> anyhow::Result<Vec<(String, String)>> {
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds).await?;
    manifests::create_namespaces(&mgmt.client(), &["demo"]).await?;
    manifests::create_namespaces(&workload.client(), &["demo"]).await?;
    let catalog = Catalog::new(&crds);
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(workload.client(), "demo");
    for (name, user, password) in [
        ("pg-admin", pg.user(), pg.password()),
        ("mariadb-admin", maria.user(), maria.password()),
    ] {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "demo"},
            "stringData": {"username": user, "password": password}
        });
        secrets
            .patch(
                name,
                &kube::api::PatchParams::apply(manifests::FIELD_MANAGER),
                &kube::api::Patch::Apply(&secret),
            )
            .await?;
    }
    // What the backup examples need: a bucket, its credentials, an age key pair (the
    // recipient to write, the identity to restore).
    let (identity, recipient) = dbprov_tests::backup_fixtures::age_keypair()?;
    for (name, data) in [
        (
            "backup-s3",
            json!({"AWS_ACCESS_KEY_ID": minio.access_key(), "AWS_SECRET_ACCESS_KEY": minio.secret_key()}),
        ),
        ("backup-age", json!({"recipient": recipient})),
        ("backup-age-identity", json!({"identity": identity})),
    ] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": name, "namespace": "demo"}, "stringData": data});
        secrets
            .patch(
                name,
                &kube::api::PatchParams::apply(manifests::FIELD_MANAGER),
                &kube::api::Patch::Apply(&secret),
            )
            .await?;
    }
    let s3 = minio.s3_client();
    if s3
        .head_bucket()
        .bucket("dbprov-backups")
        .send()
        .await
        .is_err()
    {
        s3.create_bucket()
            .bucket("dbprov-backups")
            .send()
            .await
            .context("creating the dbprov-backups bucket in MinIO")?;
    }
    // The hub's default cluster, served by the one local agent.
    manifests::apply(
        &mgmt.client(),
        &catalog,
        &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": "default", "labels": {"env": "dev"}},
                "spec": {"description": "the local workload cluster"}}),
    )
    .await?;
    let docs = manifests::load_dir(&examples_dir())
        .with_context(|| format!("reading {}", examples_dir().display()))?;
    let mut applied = Vec::new();
    for doc in docs {
        let mut value = doc.value.clone();
        if value["kind"] == "DatabaseInstance" {
            let port = if value["spec"]["engine"] == "postgres" {
                pg.port()
            } else {
                maria.port()
            };
            value["spec"]["connection"]["host"] = json!("127.0.0.1");
            value["spec"]["connection"]["port"] = json!(port);
        }
        for storage in ["/spec/storage/s3", "/spec/template/spec/storage/s3"] {
            if let Some(s3) = value.pointer_mut(storage) {
                s3["endpoint"] = json!(minio.endpoint());
            }
        }
        manifests::apply(&mgmt.client(), &catalog, &value)
            .await
            .with_context(|| format!("applying {}", doc.id()))?;
        // Consent objects have no status to wait for.
        if value["kind"] == "DatabaseReferenceGrant" {
            continue;
        }
        applied.push((
            value["kind"].as_str().unwrap_or_default().to_owned(),
            value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    Ok(applied)
}

/// The example DatabasePolicy at work: a Database named against its naming rule is refused by
/// the apiserver (dry run, as ServiceAccount demo/demo-tenant), with the policy's message.
/// Returns that message.
async fn show_policy_refusal(mgmt: &KubeEnv) -> anyhow::Result<String> {
    let catalog = Catalog::new(&dbprov_hub::crdgen::all());
    let bad = json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
        "metadata": {"name": "bad-name", "namespace": "demo"},
        "spec": {"instanceRef": {"name": "postgres"}, "name": "ShopArchive"}});
    // As a tenant: the hub runs as the cluster admin here, and the hub's own identity is
    // exempt from policies at admission (its finalizer writes must pass).
    let (tenant, _) = dbprov_tests::admission::service_account_client(mgmt, "demo", "demo-tenant")
        .await
        .context("a ServiceAccount for the policy example")?;
    let api = catalog.api_for(&tenant, &bad).context("Database API")?;
    let mut pp = kube::api::PatchParams::apply("dbprov-devenv").force();
    pp.dry_run = true;
    // The hub creates the ValidatingAdmissionPolicy when it starts; the apiserver enforces it a
    // moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match api
            .patch("bad-name", &pp, &kube::api::Patch::Apply(&bad))
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("DatabasePolicy demo-guardrails") => {
                return Ok(e.message);
            }
            Err(e) => anyhow::bail!("the policy example: unexpected error {e}"),
            Ok(_) => anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the example DatabasePolicy demo-guardrails did not refuse a Database named ShopArchive within 60 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_examples_ready(mgmt: &KubeEnv, examples: &[(String, String)]) -> anyhow::Result<()> {
    let catalog = Catalog::new(&dbprov_hub::crdgen::all());
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut waiting = Vec::new();
        for (kind, name) in examples {
            let api = catalog
                .api_for(
                    &mgmt.client(),
                    &json!({"kind": kind, "metadata": {"namespace": "demo"}}),
                )
                .context("example API")?;
            let status = &api.get(name).await?.data["status"];
            // Provisioning kinds end Ready, backups and restores Completed, schedules Active.
            let done = ["Ready", "Completed", "Active"]
                .iter()
                .any(|p| status["phase"] == *p);
            if !done {
                waiting.push(format!(
                    "{kind}/{name}: {}",
                    status["message"].as_str().unwrap_or("no status yet")
                ));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "examples not Ready within 180s:\n  {}\nsee `kubectl get dbprov -n demo -o yaml`",
            waiting.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kubectl get dbprov -n demo` against the management cluster, as text.
fn kubectl_get(mgmt: &KubeEnv) -> String {
    let Ok(kubectl) = dbprov_tests::tools::find("kubectl") else {
        return "(kubectl not installed: scripts/install-tools.sh installs it)".into();
    };
    match std::process::Command::new(kubectl)
        .env("KUBECONFIG", mgmt.kubeconfig())
        .args(["get", "dbprov", "-n", "demo"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("(kubectl failed: {e})"),
    }
}

async fn verify_generated_credentials(workload: &KubeEnv, pg: &Postgres) -> anyhow::Result<()> {
    use sqlx::Connection;
    let secret =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(workload.client(), "demo")
            .get("shop-app-credentials")
            .await
            .context("reading the generated credentials Secret")?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username(&field("username"))
        .password(&field("password"))
        .database("shop");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .context("logging in with the generated credentials")?
        .close()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dbprov_tests::init_crypto();
    eprintln!("starting the dbprov local environment ...");
    let (mgmt, workload, pg, maria, minio, gcs, azurite) = tokio::try_join!(
        KubeEnv::start(),
        KubeEnv::start(),
        Postgres::start(),
        MariaDb::start(),
        Minio::start(),
        FakeGcs::start(),
        Azurite::start(),
    )
    .context("starting the local environment (scripts/install-tools.sh installs the tools)")?;
    let pki = Pki::new()?;
    let examples = apply_examples(&mgmt, &workload, &pg, &maria, &minio).await?;
    let hub = HubProcess::start(&mgmt, &pki, 0, 5).await?;
    let agent = AgentProcess::start(
        &workload,
        &pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: pki.cluster("default")?,
            admin_port: true,
        },
    )?;
    let admin = pki.admin("dev")?;
    wait_examples_ready(&mgmt, &examples).await?;
    verify_generated_credentials(&workload, &pg).await?;
    let refused = show_policy_refusal(&mgmt).await?;
    println!("\n$ kubectl get dbprov -n demo\n{}", kubectl_get(&mgmt));

    let grpcurl = format!(
        "grpcurl -cacert {} -cert {} -key {} -servername localhost",
        pki.ca_cert().display(),
        admin.cert.display(),
        admin.key.display()
    );
    let exports = [
        ("KUBECONFIG", mgmt.kubeconfig().display().to_string()),
        (
            "DBPROV_WORKLOAD_KUBECONFIG",
            workload.kubeconfig().display().to_string(),
        ),
        ("DBPROV_HUB_ADDR", hub.addr.clone()),
        (
            "DBPROV_HUB_METRICS",
            format!("http://{}/metrics", hub.metrics_addr),
        ),
        (
            "DBPROV_AGENT_METRICS",
            format!("http://{}/metrics", agent.metrics_addr),
        ),
        ("DBPROV_GRPCURL", grpcurl.clone()),
        ("DBPROV_PG_URL", pg.url("postgres")),
        ("DBPROV_MARIADB_URL", maria.url("")),
        ("DBPROV_S3_ENDPOINT", minio.endpoint()),
        ("DBPROV_S3_ACCESS_KEY", minio.access_key().to_owned()),
        ("DBPROV_S3_SECRET_KEY", minio.secret_key().to_owned()),
        ("DBPROV_GCS_ENDPOINT", gcs.endpoint()),
        ("DBPROV_AZURE_BLOB_ENDPOINT", azurite.blob_endpoint()),
    ];
    println!(
        "\ndbprov is running locally (all on 127.0.0.1; stop with Ctrl-C):\n\
         \n  management cluster  export KUBECONFIG={kc}\
         \n                      kubectl get dbprov -A; kubectl get dbi -n demo; kubectl get managedclusters\
         \n  workload cluster    KUBECONFIG={wkc} kubectl get secrets -n demo\
         \n  hub gRPC            {hub}\
         \n                      {grpcurl} {hub} dbprov.admin.v1.HubAdmin/ListClusters\
         \n  agent               cluster default (the hub's default cluster), admin port {a}\
         \n  metrics, health     curl http://{hm}/metrics (hub), http://{am}/metrics (agent); also /readyz, /healthz\
         \n  PostgreSQL          {pgv}: psql '{pgurl}'\
         \n  MariaDB             {mv}: mariadb -h 127.0.0.1 -P {mport} -u root -p'{mpw}'\
         \n  S3 (MinIO)          {s3}  access key {ak}, secret key {sk}, region {region}\
         \n  GCS                 {gcsep}  (fake-gcs-server, no credentials)\
         \n  Azure Blob          {az}  (Azurite, account {acct}, emulator key)\
         \n\
         \n  examples (docs/examples, namespace demo): instances, databases, roles, users and grants\
         \n  are Ready; backup shop-now is in MinIO (age-encrypted), restored into shop_restore_check,\
         \n  and schedule shop-nightly runs at 03:00 Europe/Berlin.\
         \n  DatabasePolicy demo-guardrails refuses, e.g., a Database named ShopArchive (dry run):\
         \n    {refused}\
         \n  Log in with the generated credentials (they exist only in the workload cluster):\
         \n    export KUBECONFIG={wkc}\
         \n    psql \"$(kubectl get secret -n demo shop-app-credentials -o jsonpath='{{.data.DATABASE_URL}}' | base64 -d)\"\
         \n    mariadb -h 127.0.0.1 -P {mport} -u catalog_app \\\
         \n      -p\"$(kubectl get secret -n demo catalog-app-credentials -o jsonpath='{{.data.password}}' | base64 -d)\" catalog\n",
        kc = mgmt.kubeconfig().display(),
        refused = refused,
        wkc = workload.kubeconfig().display(),
        hub = hub.addr,
        a = agent.admin_addr.clone().unwrap_or_default(),
        hm = hub.metrics_addr,
        am = agent.metrics_addr,
        pgv = pg.version(),
        pgurl = pg.url("postgres"),
        mv = maria.version(),
        mport = maria.port(),
        mpw = maria.password(),
        s3 = minio.endpoint(),
        ak = minio.access_key(),
        sk = minio.secret_key(),
        region = Minio::REGION,
        gcsep = gcs.endpoint(),
        az = azurite.blob_endpoint(),
        acct = Azurite::ACCOUNT,
    );
    if let Some(path) = &cli.env_file {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating --env-file {}", path.display()))?;
        for (k, v) in &exports {
            writeln!(f, "export {k}='{v}'")?;
        }
        println!("  connection details written to {}", path.display());
    }
    if cli.check {
        println!("--check: everything started and the examples are Ready; stopping.");
        return Ok(());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping ...");
    Ok(())
}
