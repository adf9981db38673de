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

async fn apply_samples(
    mgmt: &KubeEnv,
    workload: &KubeEnv,
    pg: &Postgres,
    maria: &MariaDb,
) -> anyhow::Result<()> {
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds).await?;
    manifests::create_namespaces(&mgmt.client(), &["demo"]).await?;
    manifests::create_namespaces(&workload.client(), &["demo"]).await?;
    let catalog = Catalog::new(&crds);
    // Admin credentials exist only in the workload cluster, where the agents read them.
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
    let samples = [
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
               "metadata": {"name": "workload-a", "labels": {"env": "dev"}}, "spec": {"description": "local agent A"}}),
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
               "metadata": {"name": "workload-b", "labels": {"env": "dev"}}, "spec": {"description": "local agent B"}}),
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
               "metadata": {"name": "postgres", "namespace": "demo"},
               "spec": {"engine": "postgres", "clusterRef": {"name": "workload-a"},
                        "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres",
                                       "secretRef": {"name": "pg-admin"}},
                        "postgres": {"sslMode": "disable"}, "healthCheck": {"intervalSeconds": 30}}}),
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
               "metadata": {"name": "mariadb", "namespace": "demo"},
               "spec": {"engine": "mariadb", "clusterRef": {"name": "workload-b"},
                        "connection": {"host": "127.0.0.1", "port": maria.port(), "database": "mysql",
                                       "secretRef": {"name": "mariadb-admin"}},
                        "mysql": {"tls": "disabled"}, "healthCheck": {"intervalSeconds": 30}}}),
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
               "metadata": {"name": "shop", "namespace": "demo"},
               "spec": {"instanceRef": {"name": "postgres"}, "name": "shop", "deletionPolicy": "Delete",
                        "deletionProtection": false, "postgres": {"connectionLimit": 20}}}),
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
               "metadata": {"name": "shop-app", "namespace": "demo"},
               "spec": {"instanceRef": {"name": "postgres"}, "username": "shop_app",
                        "passwordSecret": {"secretName": "shop-app-credentials"}}}),
    ];
    for doc in &samples {
        manifests::apply(&mgmt.client(), &catalog, doc).await?;
    }
    Ok(())
}

async fn wait_samples_ready(mgmt: &KubeEnv) -> anyhow::Result<()> {
    let catalog = Catalog::new(&dbprov_hub::crdgen::all());
    let samples = [
        ("DatabaseInstance", "postgres"),
        ("DatabaseInstance", "mariadb"),
        ("Database", "shop"),
        ("DatabaseUser", "shop-app"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut ready = 0;
        for (kind, name) in samples {
            let api = catalog
                .api_for(
                    &mgmt.client(),
                    &json!({"kind": kind, "metadata": {"namespace": "demo"}}),
                )
                .context("sample API")?;
            if api.get(name).await?.data["status"]["phase"] == "Ready" {
                ready += 1;
            }
        }
        if ready == samples.len() {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "samples not Ready within 90s; see `kubectl get dbprov -n demo -o yaml`"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Logs in with what the agent wrote to the workload cluster: the sample user really works.
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
    apply_samples(&mgmt, &workload, &pg, &maria).await?;
    let hub = HubProcess::start(&mgmt, &pki, 0, 5).await?;
    let mut agents = Vec::new();
    for cluster in ["workload-a", "workload-b"] {
        agents.push(AgentProcess::start(
            &workload,
            &pki,
            &hub.addr,
            &AgentOptions {
                cluster_name: cluster.into(),
                cert: pki.cluster(cluster)?,
                admin_port: true,
            },
        )?);
    }
    let admin = pki.admin("dev")?;
    wait_samples_ready(&mgmt).await?;
    verify_generated_credentials(&workload, &pg).await?;

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
         \n  agents              workload-a (admin port {a}), workload-b (admin port {b})\
         \n  PostgreSQL          {pgv}: psql '{pgurl}'\
         \n  MariaDB             {mv}: mariadb -h 127.0.0.1 -P {mport} -u root -p'{mpw}'\
         \n  S3 (MinIO)          {s3}  access key {ak}, secret key {sk}, region {region}\
         \n  GCS                 {gcsep}  (fake-gcs-server, no credentials)\
         \n  Azure Blob          {az}  (Azurite, account {acct}, emulator key)\
         \n\
         \n  samples (namespace demo): DatabaseInstances postgres (via workload-a) and mariadb (via workload-b),\
         \n  Database shop and DatabaseUser shop-app are Ready. Log in with the generated credentials:\
         \n    export KUBECONFIG={wkc}\
         \n    PGPASSWORD=\"$(kubectl get secret -n demo shop-app-credentials -o jsonpath='{{.data.password}}' | base64 -d)\" \\\
         \n      psql -h 127.0.0.1 -p {pgport} -U shop_app shop\n",
        kc = mgmt.kubeconfig().display(),
        wkc = workload.kubeconfig().display(),
        hub = hub.addr,
        a = agents[0].admin_addr.clone().unwrap_or_default(),
        b = agents[1].admin_addr.clone().unwrap_or_default(),
        pgv = pg.version(),
        pgurl = pg.url("postgres"),
        pgport = pg.port(),
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
        println!("--check: everything started and the samples are Ready; stopping.");
        return Ok(());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping ...");
    Ok(())
}
