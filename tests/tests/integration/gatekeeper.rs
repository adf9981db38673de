//! The hub chart's Gatekeeper ConstraintTemplates (docs/gatekeeper.md), checked with OPA's own
//! tools (`opa`, built from its Go module by scripts/install-tools.sh): the `opa test` suites
//! next to the Rego pass, parsed as Rego v1 (OPA 1.x) and as v0 (how Gatekeeper reads a
//! template's `rego`); `helm template` embeds exactly those files, which `opa check --strict`
//! accepts in both modes; test files are not packaged; every example constraint names a
//! rendered template, uses only parameters its schema declares, and fires on a violating
//! object but not on a compliant one when `opa eval` runs the rendered Rego; the templates'
//! parameters are fields of the DatabasePolicy block they mirror (the generated CRD).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use dbprov_tests::{
    helm,
    process::{self, Output, WorkDir},
    require, tools,
};
use serde_json::{Value, json};

const NS: &str = "dbprov-system";

/// Every template: its name (= the Rego file and package), and the DatabasePolicy spec
/// fields its parameters mirror.
const TEMPLATES: &[(&str, &[&str])] = &[
    (
        "dbprovrequiredmetadata",
        &["requiredLabels", "requiredAnnotations"],
    ),
    ("dbprovnaming", &["naming"]),
    ("dbprovdeletion", &["deletion"]),
    ("dbprovprivileges", &["privileges"]),
    ("dbprovbackup", &["backup"]),
    ("dbprovaccess", &["access"]),
    ("dbprovpassword", &["passwordPolicy"]),
];

/// Template parameters with no DatabasePolicy counterpart, each explained in the Rego.
const GATEKEEPER_ONLY: &[&str] = &["dbprovaccess: defaultCluster"];

fn rego_dir() -> PathBuf {
    helm::chart("dbprov-hub").join("files/gatekeeper")
}

fn ok(what: &str, out: &Output) {
    assert!(out.ok, "{what} failed:\n{}\n{}", out.stdout, out.stderr);
}

fn opa(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tools::find("opa").unwrap());
    cmd.args(args);
    process::run(cmd, stdin).unwrap()
}

/// The rendered hub chart with the templates and example constraints.
fn render(dir: &WorkDir) -> Vec<Value> {
    let out = helm::template(
        dir,
        "dbprov-hub",
        "dbprov-hub",
        NS,
        &[
            "--set",
            "gatekeeper.enabled=true,gatekeeper.exampleConstraints.enabled=true",
            "--set",
            "gatekeeper.exampleConstraints.enforcementAction=warn",
        ],
    )
    .unwrap();
    ok("helm template with gatekeeper.enabled", &out);
    helm::documents(&out.stdout).unwrap()
}

fn constraint_templates(docs: &[Value]) -> BTreeMap<String, &Value> {
    docs.iter()
        .filter(|d| d["kind"] == "ConstraintTemplate")
        .map(|d| (d["metadata"]["name"].as_str().unwrap().to_owned(), d))
        .collect()
}

#[test]
fn opa_reports_its_pinned_version() {
    require!(tools::find("opa"));
    let pinned = tools::pinned_version("OPA_VERSION").unwrap();
    let out = opa(&["version"], None);
    ok("opa version", &out);
    assert!(
        out.stdout.lines().next() == Some(&format!("Version: {pinned}")),
        "opa version says {:?}, pinned {pinned}",
        out.stdout
    );
}

#[test]
fn opa_test_suites_pass_for_every_template_in_rego_v1_and_v0() {
    require!(tools::find("opa"));
    let dir = rego_dir();
    // Exactly the templates' sources, each with its suite.
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = TEMPLATES
        .iter()
        .flat_map(|(t, _)| [format!("{t}.rego"), format!("{t}_test.rego")])
        .collect();
    assert_eq!(files, want, "files in {}", dir.display());

    let dir_arg = dir.display().to_string();
    // v1: OPA 1.x's default. --v0-compatible: how Gatekeeper parses a template's `rego`.
    for mode in [&[][..], &["--v0-compatible"][..]] {
        let args = [&["test", "--format=json"][..], mode, &[&dir_arg]].concat();
        let out = opa(&args, None);
        ok(&format!("opa {args:?}"), &out);
        let results: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
        let failed: Vec<&Value> = results
            .iter()
            .filter(|r| {
                r.get("fail").is_some() || r.get("error").is_some() || r.get("skip").is_some()
            })
            .collect();
        assert!(failed.is_empty(), "opa test {mode:?}: {failed:#?}");
        assert!(
            results.len() >= TEMPLATES.len() * 2,
            "{} tests for {} templates",
            results.len(),
            TEMPLATES.len()
        );
        let mut per_package: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &results {
            *per_package
                .entry(r["package"].as_str().unwrap())
                .or_default() += 1;
        }
        for (t, _) in TEMPLATES {
            let n = per_package
                .get(format!("data.{t}_test").as_str())
                .copied()
                .unwrap_or(0);
            // At least a violating and a compliant input per template.
            assert!(n >= 2, "{t}: {n} tests");
        }
        eprintln!(
            "opa test {mode:?}: {} tests passed ({per_package:?})",
            results.len()
        );
    }
}

#[test]
fn rendered_templates_embed_the_tested_rego_and_opa_check_accepts_it() {
    require!(tools::find("opa"));
    require!(tools::find("helm"));
    let dir = WorkDir::new("gatekeeper").unwrap();

    // Off by default.
    let out = helm::template(&dir, "dbprov-hub", "dbprov-hub", NS, &[]).unwrap();
    ok("helm template (defaults)", &out);
    assert!(
        !out.stdout.contains("gatekeeper.sh"),
        "the defaults render Gatekeeper objects"
    );

    let docs = render(&dir);
    let templates = constraint_templates(&docs);
    let names: BTreeSet<&str> = templates.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = TEMPLATES.iter().map(|(t, _)| *t).collect();
    assert_eq!(names, want);
    for (name, t) in &templates {
        assert_eq!(t["apiVersion"], "templates.gatekeeper.sh/v1", "{name}");
        // Gatekeeper requires the template's name to be its kind in lower case.
        let kind = t["spec"]["crd"]["spec"]["names"]["kind"].as_str().unwrap();
        assert_eq!(kind.to_lowercase(), *name);
        let targets = t["spec"]["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{name}");
        assert_eq!(
            targets[0]["target"], "admission.k8s.gatekeeper.sh",
            "{name}"
        );
        let rego = targets[0]["rego"].as_str().unwrap();
        let file = std::fs::read_to_string(rego_dir().join(format!("{name}.rego"))).unwrap();
        assert!(
            rego == file,
            "{name}: the rendered rego differs from the file"
        );
        assert!(
            rego.lines().any(|l| l == format!("package {name}")),
            "{name}: package"
        );
        assert!(
            rego.contains("violation contains {\"msg\": msg} if"),
            "{name}: no Gatekeeper violation rule"
        );
        let path = dir.join(format!("{name}.rego"));
        std::fs::write(&path, rego).unwrap();
        let path = path.display().to_string();
        for mode in [&[][..], &["--v0-compatible"][..]] {
            let args = [&["check", "--strict"][..], mode, &[&path]].concat();
            ok(&format!("opa {args:?}"), &opa(&args, None));
        }
    }

    // The suites stay in the repository: `helm package` leaves them out (.helmignore).
    let mut cmd = helm::helm(&dir).unwrap();
    cmd.arg("package")
        .arg(helm::chart("dbprov-hub"))
        .arg("--destination")
        .arg(dir.path());
    ok("helm package", &process::run(cmd, None).unwrap());
    let tgz = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .unwrap();
    let mut cmd = Command::new("tar");
    cmd.arg("tzf").arg(&tgz);
    let listing = process::run(cmd, None).unwrap();
    ok("tar tzf", &listing);
    let packaged: Vec<&str> = listing
        .stdout
        .lines()
        .filter(|l| l.contains("files/gatekeeper/"))
        .collect();
    assert_eq!(packaged.len(), TEMPLATES.len(), "{packaged:?}");
    assert!(packaged.iter().all(|f| !f.ends_with("_test.rego")));
}

/// A violating and a compliant object for each example constraint.
fn fixtures(kind: &str) -> (Value, Value) {
    let meta = json!({"name": "orders", "namespace": "team-a", "labels": {"team": "team-a"}});
    let obj = |kind: &str, spec: Value| json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec});
    match kind {
        "DbprovRequiredMetadata" => (
            json!({"kind": "Database", "metadata": {"name": "orders", "namespace": "team-a"}, "spec": {"name": "team_a_orders"}}),
            obj("Database", json!({"name": "team_a_orders"})),
        ),
        "DbprovNaming" => (
            obj("Database", json!({"name": "orders"})),
            obj("Database", json!({"name": "team_a_orders"})),
        ),
        "DbprovDeletion" => (
            obj(
                "Database",
                json!({"name": "team_a_orders", "deletionPolicy": "Delete"}),
            ),
            obj(
                "Database",
                json!({"name": "team_a_orders", "deletionProtection": true, "deletionPolicy": "Retain"}),
            ),
        ),
        "DbprovPrivileges" => (
            obj(
                "DatabaseGrant",
                json!({"mysql": {"grants": [{"level": "global", "privileges": ["ALL PRIVILEGES"]}]}}),
            ),
            obj(
                "DatabaseGrant",
                json!({"postgres": {"grants": [{"database": "team_a_orders", "privileges": ["CONNECT"]}]}}),
            ),
        ),
        "DbprovBackup" => (
            obj(
                "DatabaseBackup",
                json!({"databaseRef": {"name": "orders"}, "storage": {"type": "pvc"}}),
            ),
            obj(
                "DatabaseBackup",
                json!({"databaseRef": {"name": "orders"}, "storage": {"type": "s3"}, "encryption": {"enabled": true}}),
            ),
        ),
        "DbprovAccess" => (
            obj(
                "DatabaseInstance",
                json!({"engine": "postgres", "clusterRef": {"name": "elsewhere"}}),
            ),
            obj("DatabaseInstance", json!({"engine": "postgres"})),
        ),
        "DbprovPassword" => (
            obj(
                "DatabaseUser",
                json!({"username": "team_a_app", "passwordSecret": {"secretName": "s", "length": 12}}),
            ),
            obj(
                "DatabaseUser",
                json!({"username": "team_a_app", "passwordSecret": {"secretName": "s"}, "passwordRotation": {"enabled": true, "maxAge": "30d"}}),
            ),
        ),
        other => panic!("no fixtures for {other}"),
    }
}

/// Paths (`a.b`) of every value in `params` that the template's parameter schema does not
/// declare.
fn undeclared(params: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    match params {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}{k}");
                match schema["properties"].get(k) {
                    Some(s) => undeclared(v, s, &format!("{p}."), out),
                    None => out.push(p),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                undeclared(v, &schema["items"], path, out);
            }
        }
        _ => {}
    }
}

#[test]
fn example_constraints_fit_their_templates_and_fire_on_violations_only() {
    require!(tools::find("opa"));
    require!(tools::find("helm"));
    let dir = WorkDir::new("gatekeeper-examples").unwrap();
    let docs = render(&dir);
    let templates = constraint_templates(&docs);
    let constraints: Vec<&Value> = docs
        .iter()
        .filter(|d| d["apiVersion"] == "constraints.gatekeeper.sh/v1beta1")
        .collect();
    let kinds: BTreeSet<&str> = constraints
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), TEMPLATES.len(), "one example per template");
    for c in constraints {
        let kind = c["kind"].as_str().unwrap();
        let name = kind.to_lowercase();
        let template = templates
            .get(&name)
            .unwrap_or_else(|| panic!("{kind}: no template"));
        assert_eq!(c["spec"]["enforcementAction"], "warn", "{kind}");
        let matched = &c["spec"]["match"]["kinds"][0];
        assert_eq!(matched["apiGroups"], json!(["dbops.dbprovision.io"]));
        let schema = &template["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"];
        let params = &c["spec"]["parameters"];
        let mut extra = Vec::new();
        undeclared(params, schema, "", &mut extra);
        assert!(extra.is_empty(), "{kind}: undeclared parameters {extra:?}");

        let rego = dir.join(format!("{name}.rego"));
        std::fs::write(
            &rego,
            template["spec"]["targets"][0]["rego"].as_str().unwrap(),
        )
        .unwrap();
        let rego = rego.display().to_string();
        let (bad, good) = fixtures(kind);
        for (object, want_violations) in [(bad, true), (good, false)] {
            let object_kind = object["kind"].as_str().unwrap().to_owned();
            assert!(
                matched["kinds"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(object_kind)),
                "{kind} does not match {object_kind}"
            );
            let input = json!({"review": {"object": object, "kind": {"group": "dbops.dbprovision.io", "version": "v1alpha1", "kind": object_kind}}, "parameters": params});
            let query = format!("data.{name}.violation");
            let out = opa(
                &[
                    "eval",
                    "--v0-compatible",
                    "--format=json",
                    "--stdin-input",
                    "-d",
                    &rego,
                    &query,
                ],
                Some(&input.to_string()),
            );
            ok(&format!("opa eval {query}"), &out);
            let result: Value = serde_json::from_str(&out.stdout).unwrap();
            let violations = result["result"][0]["expressions"][0]["value"]
                .as_array()
                .unwrap()
                .clone();
            assert!(
                violations.iter().all(|v| v["msg"].is_string()),
                "{kind}: {violations:?}"
            );
            assert_eq!(
                !violations.is_empty(),
                want_violations,
                "{kind} on {}: {violations:?}",
                input["review"]["object"]
            );
            eprintln!(
                "{kind} ({}) on {object_kind}: {:?}",
                c["metadata"]["name"].as_str().unwrap(),
                violations
                    .iter()
                    .map(|v| v["msg"].as_str().unwrap())
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// Paths of every property a schema declares, with their types (`a.b` -> `object`).
fn properties(schema: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    let (schema, path) = match schema["type"].as_str() {
        Some("array") => (&schema["items"], format!("{path}[]")),
        _ => (schema, path.to_owned()),
    };
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            out.insert(p.clone(), v["type"].as_str().unwrap_or("any").to_owned());
            properties(v, &p, out);
        }
    }
}

#[test]
fn template_parameters_are_databasepolicy_fields() {
    require!(tools::find("helm"));
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds/databasepolicies.dbops.dbprovision.io.yaml"),
    )
    .unwrap();
    let crd: Value = serde_yaml::from_str(&crd).unwrap();
    let policy = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut policy_fields = BTreeMap::new();
    properties(policy, "", &mut policy_fields);

    let dir = WorkDir::new("gatekeeper-params").unwrap();
    let docs = render(&dir);
    let templates = constraint_templates(&docs);
    let mut covered = BTreeSet::new();
    for (name, blocks) in TEMPLATES {
        let schema = &templates[*name]["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"];
        let mut params = BTreeMap::new();
        properties(schema, "", &mut params);
        assert!(!params.is_empty(), "{name} declares no parameters");
        for (param, ty) in params {
            if GATEKEEPER_ONLY.contains(&format!("{name}: {param}").as_str()) {
                continue;
            }
            // A template of one block takes the block's fields as its parameters; the
            // required-metadata template takes the two policy fields themselves.
            let field = if blocks.len() == 1 {
                format!("{}.{param}", blocks[0])
            } else {
                param.clone()
            };
            let policy_ty = policy_fields.get(&field).unwrap_or_else(|| {
                panic!("{name}: parameter {param} is not DatabasePolicy spec.{field}")
            });
            assert_eq!(&ty, policy_ty, "{name}: type of {param} (spec.{field})");
            covered.insert(field);
        }
    }
    // What Gatekeeper cannot check from a manifest (the password itself, the instance's
    // cluster or engine behind a reference, custom Rego): printed, enforced by the hub.
    let rule_blocks: Vec<&str> = TEMPLATES
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let uncovered: Vec<&String> = policy_fields
        .keys()
        .filter(|f| {
            rule_blocks
                .iter()
                .any(|b| f.split(['.', '[']).next() == Some(*b))
        })
        .filter(|f| !covered.contains(*f) && !rule_blocks.contains(&f.as_str()))
        .collect();
    eprintln!("DatabasePolicy fields without a Gatekeeper parameter: {uncovered:?}");
    assert!(covered.len() >= 25, "{} fields covered", covered.len());
}
