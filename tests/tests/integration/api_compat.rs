//! The generated CRDs against db-provision-operator v0.14's own CRD schemas (from
//! `../shared/reference/dpo-v0.14-crds`, read at test time, never copied into this repo):
//! every kind, name, short name and scope is kept, and every field of the reference exists
//! with the same type, enum values, defaults and patterns, never with a stricter bound or a
//! new required field. Also: manifests round-trip through the Rust types without losing a
//! field, and the valid corpus exercises every enum value and every field group.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeSet, path::Path};

use dbprov_hub::{api, crdgen};
use dbprov_tests::manifests;
use serde_json::Value;

/// Deliberate differences from the reference, each with its reason.
const ALLOWED_DEFAULT_CHANGES: &[(&str, &str)] = &[(
    "spec.deletionPolicy",
    // DESIGN §1.6: deleting a custom resource never destroys data unless asked to.
    "Retain",
)];

fn reference_crds() -> Option<Vec<Value>> {
    let dir = manifests::reference_crds_dir()?;
    let docs = manifests::load_dir(&dir).unwrap();
    Some(docs.into_iter().map(|d| d.value).collect())
}

fn ours() -> Vec<Value> {
    crdgen::all()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

/// The values an enum accepts. controller-gen may emit several `allOf` enums; a value must
/// be in all of them, so the accepted set is their intersection.
fn enum_of(schema: &Value) -> Option<BTreeSet<String>> {
    let as_set = |e: &Value| -> Option<BTreeSet<String>> {
        Some(
            e.as_array()?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
        )
    };
    let mut sets: Vec<BTreeSet<String>> = schema.get("enum").and_then(as_set).into_iter().collect();
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        sets.extend(
            all_of
                .iter()
                .filter_map(|a| a.get("enum"))
                .filter_map(as_set),
        );
    }
    let mut sets = sets.into_iter();
    let first = sets.next()?;
    Some(sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect()))
}

/// `key` of a reference schema, also where it sits in an `allOf` (the reference's enums and
/// some patterns do).
fn reference_keyword<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema.get(key).or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|all| all.iter().find_map(|s| s.get(key)))
    })
}

fn compare(path: &str, reference: &Value, ours: &Value, problems: &mut Vec<String>) {
    let r_type = reference.get("type");
    if r_type.is_some() && r_type != ours.get("type") {
        problems.push(format!(
            "{path}: type {r_type:?} vs ours {:?}",
            ours.get("type")
        ));
    }
    if let Some(r_enum) = enum_of(reference) {
        match enum_of(ours) {
            Some(o_enum) if r_enum.is_subset(&o_enum) => {}
            other => problems.push(format!("{path}: enum {r_enum:?} not within ours {other:?}")),
        }
    }
    if let Some(r_default) = reference.get("default") {
        let allowed = ALLOWED_DEFAULT_CHANGES
            .iter()
            .find(|(p, _)| path.ends_with(p))
            .map(|(_, v)| Value::String((*v).to_owned()));
        let o_default = ours.get("default");
        if o_default != Some(r_default) && o_default != allowed.as_ref() {
            problems.push(format!("{path}: default {r_default} vs ours {o_default:?}"));
        }
    }
    // Admission is never stricter than the reference: a constraint the reference lacks is
    // checked by the hub and reported in status instead (dbprov_hub::api::strict).
    for key in [
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
    ] {
        if ours.get(key).is_some() && reference_keyword(reference, key).is_none() {
            problems.push(format!(
                "{path}: {key} {} at admission, which the reference does not have",
                ours[key]
            ));
        }
    }
    for key in ["pattern", "format"] {
        if let Some(r) = reference.get(key)
            && ours.get(key) != Some(r)
        {
            problems.push(format!("{path}: {key} {r} vs ours {:?}", ours.get(key)));
        }
    }
    for (key, looser_is_lower) in [
        ("minimum", true),
        ("minLength", true),
        ("minItems", true),
        ("maximum", false),
        ("maxLength", false),
        ("maxItems", false),
    ] {
        let (Some(r), Some(o)) = (
            reference.get(key).and_then(Value::as_f64),
            ours.get(key).and_then(Value::as_f64),
        ) else {
            // A bound the reference has and we do not is looser: fine.
            continue;
        };
        let stricter = if looser_is_lower { o > r } else { o < r };
        if stricter {
            problems.push(format!("{path}: {key} {r} tightened to {o}"));
        }
    }
    let r_required: BTreeSet<&str> = reference
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let o_required: BTreeSet<&str> = ours
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for extra in o_required.difference(&r_required) {
        problems.push(format!(
            "{path}: `{extra}` is required by us but not by the reference"
        ));
    }
    if let Some(props) = reference.get("properties").and_then(Value::as_object) {
        for (name, r_child) in props {
            match ours.get("properties").and_then(|p| p.get(name)) {
                Some(o_child) => compare(&format!("{path}.{name}"), r_child, o_child, problems),
                None => problems.push(format!("{path}.{name}: missing")),
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(r_child) = reference.get(key).filter(|v| v.is_object()) {
            match ours.get(key) {
                Some(o_child) => compare(&format!("{path}[]"), r_child, o_child, problems),
                None => problems.push(format!("{path}: {key} missing")),
            }
        }
    }
}

#[test]
fn every_reference_kind_and_field_is_kept() {
    let Some(references) = reference_crds() else {
        return;
    };
    assert_eq!(references.len(), 11, "the reference has 11 kinds");
    let ours = ours();
    let mut problems = Vec::new();
    for r in &references {
        let name = r["metadata"]["name"].as_str().unwrap();
        let Some(o) = ours.iter().find(|o| o["metadata"]["name"] == name) else {
            problems.push(format!("{name}: no such CRD generated"));
            continue;
        };
        for key in ["group", "scope"] {
            if r["spec"][key] != o["spec"][key] {
                problems.push(format!("{name}: spec.{key} differs"));
            }
        }
        for key in ["kind", "plural", "singular"] {
            if r["spec"]["names"][key] != o["spec"]["names"][key] {
                problems.push(format!("{name}: names.{key} differs"));
            }
        }
        // The apiserver defaults listKind to `<kind>List`.
        let list_kind = o["spec"]["names"]["listKind"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}List", o["spec"]["names"]["kind"].as_str().unwrap()));
        if r["spec"]["names"]["listKind"] != list_kind.as_str() {
            problems.push(format!("{name}: names.listKind differs"));
        }
        let o_short: Vec<&Value> = o["spec"]["names"]["shortNames"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        for s in r["spec"]["names"]["shortNames"].as_array().unwrap() {
            if !o_short.contains(&s) {
                problems.push(format!("{name}: short name {s} missing"));
            }
        }
        let r_version = &r["spec"]["versions"][0];
        let o_version = &o["spec"]["versions"][0];
        assert_eq!(r_version["name"], o_version["name"], "{name}");
        assert!(
            o_version["subresources"]["status"].is_object(),
            "{name}: status subresource"
        );
        // At the root only spec and status are ours to define: the apiserver supplies
        // apiVersion, kind and metadata, and kube marks `spec` required (an object without a
        // spec means nothing for any of these kinds).
        let r_root = &r_version["schema"]["openAPIV3Schema"];
        let o_root = &o_version["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            compare(
                &format!("{name}.{part}"),
                &r_root["properties"][part],
                &o_root["properties"][part],
                &mut problems,
            );
        }
        // Every printer column of the reference is still there.
        for column in r_version["additionalPrinterColumns"].as_array().unwrap() {
            let found = o_version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["jsonPath"] == column["jsonPath"]);
            if !found {
                problems.push(format!("{name}: printer column {} missing", column["name"]));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every leaf of `input` is present, with the same value, in `output`.
fn lost_fields(path: &str, input: &Value, output: &Value, lost: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                match o.get(k) {
                    Some(ov) => lost_fields(&format!("{path}.{k}"), v, ov, lost),
                    None => lost.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                lost_fields(&format!("{path}[{n}]"), iv, ov, lost);
            }
        }
        (i, o) if i == o => {}
        // Integers written as floats or vice versa are the same YAML number.
        (Value::Number(i), Value::Number(o)) if i.as_f64() == o.as_f64() => {}
        (i, o) => lost.push(format!("{path}: {i} became {o}")),
    }
}

fn round_trip(doc: &Value) -> Result<Value, String> {
    fn via<K>(doc: &Value) -> Result<Value, String>
    where
        K: serde::de::DeserializeOwned + serde::Serialize,
    {
        let typed: K = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    match doc["kind"].as_str().unwrap_or_default() {
        "DatabaseInstance" => via::<api::DatabaseInstance>(doc),
        "ClusterDatabaseInstance" => via::<api::ClusterDatabaseInstance>(doc),
        "Database" => via::<api::Database>(doc),
        "DatabaseUser" => via::<api::DatabaseUser>(doc),
        "DatabaseRole" => via::<api::DatabaseRole>(doc),
        "ClusterDatabaseRole" => via::<api::ClusterDatabaseRole>(doc),
        "DatabaseGrant" => via::<api::DatabaseGrant>(doc),
        "ClusterDatabaseGrant" => via::<api::ClusterDatabaseGrant>(doc),
        "DatabaseBackup" => via::<api::DatabaseBackup>(doc),
        "DatabaseBackupSchedule" => via::<api::DatabaseBackupSchedule>(doc),
        "DatabaseRestore" => via::<api::DatabaseRestore>(doc),
        "ManagedCluster" => via::<api::ManagedCluster>(doc),
        "DatabaseMigration" => via::<api::DatabaseMigration>(doc),
        "DatabasePolicy" => via::<api::DatabasePolicy>(doc),
        "DatabaseReferenceGrant" => via::<api::DatabaseReferenceGrant>(doc),
        other => Err(format!("unknown kind {other}")),
    }
}

fn valid_corpus() -> Vec<manifests::Document> {
    manifests::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/valid")).unwrap()
}

#[test]
fn manifests_round_trip_through_the_types_without_losing_a_field() {
    let mut problems = Vec::new();
    for doc in valid_corpus() {
        match round_trip(&doc.value) {
            Ok(out) => {
                let mut lost = Vec::new();
                lost_fields("", &doc.value, &out, &mut lost);
                if !lost.is_empty() {
                    problems.push(format!("{}: {}", doc.id(), lost.join(", ")));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", doc.id())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Collects `(kind, path, value)` of every string/bool leaf under `spec`.
fn leaves(kind: &str, path: &str, v: &Value, out: &mut BTreeSet<(String, String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                out.insert((kind.to_owned(), format!("{path}.{k}"), String::new()));
                leaves(kind, &format!("{path}.{k}"), c, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                leaves(kind, &format!("{path}[]"), c, out);
            }
        }
        Value::String(s) => {
            out.insert((kind.to_owned(), path.to_owned(), s.clone()));
        }
        _ => {}
    }
}

/// Collects `(path, enum values)` of every enum under a schema node.
fn schema_enums(path: &str, s: &Value, out: &mut Vec<(String, BTreeSet<String>)>) {
    if let Some(e) = enum_of(s) {
        out.push((path.to_owned(), e));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, c) in props {
            schema_enums(&format!("{path}.{k}"), c, out);
        }
    }
    if let Some(items) = s.get("items") {
        schema_enums(&format!("{path}[]"), items, out);
    }
}

/// Enum coverage is by field path, whichever kind uses it; blocks reused at another place
/// (a restore's `fromPath` storage, a schedule's backup template) count as the same fields.
fn normalise(path: &str) -> String {
    path.replacen("spec.fromPath.", "spec.", 1)
        .replacen("spec.template.spec.", "spec.", 1)
}

#[test]
fn valid_corpus_covers_every_enum_value_and_every_top_level_field() {
    let mut seen = BTreeSet::new();
    for doc in valid_corpus() {
        let kind = doc.value["kind"].as_str().unwrap().to_owned();
        leaves(&kind, "spec", &doc.value["spec"], &mut seen);
    }
    let mut missing = Vec::new();
    let mut wanted = BTreeSet::new();
    for crd in ours() {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for field in spec["properties"].as_object().unwrap().keys() {
            if !seen.contains(&(kind.clone(), format!("spec.{field}"), String::new())) {
                missing.push(format!("{kind}: field spec.{field} never used"));
            }
        }
        let mut enums = Vec::new();
        schema_enums("spec", spec, &mut enums);
        for (path, values) in enums {
            for value in values {
                wanted.insert((normalise(&path), value));
            }
        }
    }
    let used: BTreeSet<(String, String)> = seen
        .iter()
        .map(|(_, path, value)| (normalise(path), value.clone()))
        .collect();
    for (path, value) in wanted.difference(&used) {
        missing.push(format!("{path} = {value} never used"));
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
