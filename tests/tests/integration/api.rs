//! The generated CRDs on a real kube-apiserver: they install, accept every manifest of the
//! valid corpus (written for db-provision-operator v0.14, plus dbprov's additions), reject
//! every manifest of the invalid corpus with a message naming the field, and keep immutable
//! fields immutable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use dbprov_tests::{
    KubeEnv,
    manifests::{self, Catalog},
};

fn corpus(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(sub)
}

const NAMESPACES: &[&str] = &["team-a", "team-b", "platform", "shared-secrets"];

async fn cluster_with_crds() -> Option<(KubeEnv, Catalog)> {
    let env = match KubeEnv::start().await {
        Ok(env) => env,
        Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => {
            eprintln!("SKIPPED: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&env.client(), &crds).await.unwrap();
    manifests::create_namespaces(&env.client(), NAMESPACES)
        .await
        .unwrap();
    Some((env, Catalog::new(&crds)))
}

#[tokio::test]
async fn crds_install_and_kubectl_finds_them_by_category_and_explains_fields() {
    let Some((env, catalog)) = cluster_with_crds().await else {
        return;
    };
    let doc = manifests::load_file(&corpus("valid/dpo/databases.yaml")).unwrap();
    manifests::apply(&env.client(), &catalog, &doc[0].value)
        .await
        .unwrap();

    let out = env
        .kubectl()
        .unwrap()
        .args(["get", "dbprov", "-A"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("database.dbops.dbprovision.io/orders"),
        "{stdout}"
    );

    let out = env
        .kubectl()
        .unwrap()
        .args(["explain", "databases.spec.deletionPolicy"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Retain"), "{stdout}");

    // Printer columns: what a person looks for first.
    let out = env
        .kubectl()
        .unwrap()
        .args(["get", "db", "-n", "team-a"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for column in ["INSTANCE", "DATABASE", "PHASE", "READY", "AGE"] {
        assert!(stdout.contains(column), "missing column {column}: {stdout}");
    }
}

#[tokio::test]
async fn valid_corpus_is_accepted_by_server_side_apply() {
    let Some((env, catalog)) = cluster_with_crds().await else {
        return;
    };
    let docs = manifests::load_dir(&corpus("valid")).unwrap();
    assert!(docs.len() > 50, "the valid corpus shrank to {}", docs.len());
    let mut failures = Vec::new();
    for doc in &docs {
        if let Err(e) = manifests::apply(&env.client(), &catalog, &doc.value).await {
            failures.push(format!("{} ({}): {e}", doc.id(), doc.file.display()));
        }
    }
    assert!(failures.is_empty(), "rejected:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn invalid_corpus_is_refused_with_messages_naming_the_field() {
    let Some((env, catalog)) = cluster_with_crds().await else {
        return;
    };
    let dir = corpus("invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "the invalid corpus shrank to {}",
        files.len()
    );
    let mut problems = Vec::new();
    for file in &files {
        let expect = manifests::expectations(file);
        assert!(
            !expect.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let docs = manifests::load_file(file).unwrap();
        assert_eq!(docs.len(), 1, "{}: one manifest per file", file.display());
        let in_status = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .any(|l| l == "# refused: in status");
        match manifests::apply(&env.client(), &catalog, &docs[0].value).await {
            // The Go operator's schema accepts it, so admission does too; the hub refuses it
            // in status before anything is sent (controller::kit::runner::refuse_invalid).
            Ok(_) if in_status => {
                let doc = &docs[0].value;
                let kind = doc["kind"].as_str().unwrap();
                let violations = dbprov_hub::api::strict::violations(kind, &doc["spec"]);
                let message = dbprov_hub::api::strict::message(&violations);
                if violations.is_empty() {
                    problems.push(format!("{}: accepted and not refused", file.display()));
                }
                for e in &expect {
                    if !message.contains(e.as_str()) {
                        problems.push(format!(
                            "{}: status message lacks {e:?}: {message}",
                            file.display()
                        ));
                    }
                }
            }
            Ok(_) => problems.push(format!("{}: accepted", file.display())),
            Err(e) if in_status => problems.push(format!(
                "{}: marked `refused: in status` but admission rejects it: {e}",
                file.display()
            )),
            Err(kube::Error::Api(status)) => {
                // Server-side apply reports an undeclared field as HTTP 500 "failed to create
                // typed patch object ... field not declared in schema" (apiserver behaviour).
                let undeclared =
                    status.code == 500 && status.message.contains("field not declared in schema");
                if status.code != 422 && status.code != 400 && !undeclared {
                    problems.push(format!(
                        "{}: HTTP {} {}",
                        file.display(),
                        status.code,
                        status.message
                    ));
                }
                for e in &expect {
                    if !status.message.contains(e.as_str()) {
                        problems.push(format!(
                            "{}: message lacks {e:?}: {}",
                            file.display(),
                            status.message
                        ));
                    }
                }
            }
            Err(other) => problems.push(format!("{}: {other}", file.display())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let Some((env, catalog)) = cluster_with_crds().await else {
        return;
    };
    let client = env.client();
    let instances = manifests::load_file(&corpus("valid/dpo/instances.yaml")).unwrap();
    let mut instance = instances[0].value.clone();
    manifests::apply(&client, &catalog, &instance)
        .await
        .unwrap();
    let databases = manifests::load_file(&corpus("valid/dpo/databases.yaml")).unwrap();
    let mut database = databases[0].value.clone();
    manifests::apply(&client, &catalog, &database)
        .await
        .unwrap();

    let cases = [
        (
            "/spec/engine",
            serde_json::json!("mysql"),
            "spec.engine is immutable",
            true,
        ),
        (
            "/spec/clusterRef",
            serde_json::json!({"name": "other"}),
            "spec.clusterRef cannot be added or removed after creation",
            true,
        ),
        (
            "/spec/name",
            serde_json::json!("orders_v2"),
            "spec.name is immutable",
            false,
        ),
    ];
    for (pointer, value, message, on_instance) in cases {
        let target = if on_instance {
            &mut instance
        } else {
            &mut database
        };
        let original = target.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        target.pointer_mut(parent).unwrap()[field] = value;
        let err = manifests::apply(&client, &catalog, target)
            .await
            .expect_err(pointer);
        assert!(err.to_string().contains(message), "{pointer}: {err}");
        *target = original;
    }
}

#[tokio::test]
async fn go_operator_manifests_are_accepted_by_the_go_operators_own_crds_too() {
    // Proves the `dpo` half of the valid corpus is what Go-operator users really write: the
    // reference CRDs (not ours) accept it on a separate, real apiserver.
    let Some(dir) = manifests::reference_crds_dir() else {
        return;
    };
    let env = match KubeEnv::start().await {
        Ok(env) => env,
        Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let reference: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        manifests::load_dir(&dir)
            .unwrap()
            .into_iter()
            .map(|d| serde_json::from_value(d.value).unwrap())
            .collect();
    manifests::install_crds(&env.client(), &reference)
        .await
        .unwrap();
    manifests::create_namespaces(&env.client(), NAMESPACES)
        .await
        .unwrap();
    let catalog = Catalog::new(&reference);
    let mut failures = Vec::new();
    for doc in manifests::load_dir(&corpus("valid/dpo")).unwrap() {
        if let Err(e) = manifests::apply(&env.client(), &catalog, &doc.value).await {
            failures.push(format!("{}: {e}", doc.id()));
        }
    }
    assert!(
        failures.is_empty(),
        "the reference CRDs reject:\n{}",
        failures.join("\n")
    );
}
