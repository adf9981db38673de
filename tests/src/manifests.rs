//! Manifest files and CRDs in tests: load multi-document YAML, install CRDs and wait until
//! they are Established, and server-side apply arbitrary manifests (as `kubectl apply
//! --server-side` does, with strict field validation).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective},
};
use serde_json::Value;

/// Field manager used by tests that apply manifests.
pub const FIELD_MANAGER: &str = "dbprov-tests";

/// One YAML document of a manifest file.
#[derive(Debug, Clone)]
pub struct Document {
    /// File it came from.
    pub file: PathBuf,
    /// Position in the file (0-based).
    pub index: usize,
    /// The document.
    pub value: Value,
}

impl Document {
    /// `kind/namespace/name` (or `kind/name`), for messages.
    pub fn id(&self) -> String {
        let kind = self.value["kind"].as_str().unwrap_or("?");
        let name = self.value["metadata"]["name"].as_str().unwrap_or("?");
        match self.value["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        }
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("parsing {path}: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
}

/// Every non-empty document of every `*.yaml` file under `dir` (recursively, sorted).
pub fn load_dir(dir: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        docs.extend(load_file(&file)?);
    }
    Ok(docs)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every non-empty document of one file.
pub fn load_file(file: &Path) -> Result<Vec<Document>, ManifestError> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Io {
        path: file.to_owned(),
        source,
    })?;
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(de).map_err(|source| ManifestError::Yaml {
            path: file.to_owned(),
            source,
        })?;
        if !value.is_null() {
            docs.push(Document {
                file: file.to_owned(),
                index,
                value,
            });
        }
    }
    Ok(docs)
}

/// The `# expect: <text>` lines of a file: texts the apiserver's rejection must contain.
pub fn expectations(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_owned)
        .collect()
}

/// Applies CRDs (server-side) and waits until each is Established.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> Result<(), kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for attempt in 0.. {
            let current = api.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if attempt > 300 {
                return Err(kube::Error::Service(
                    format!("CRD {name} did not become Established within 30s").into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Kind -> (plural, namespaced), read from a set of CRDs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<(String, String, String, String, bool)>,
}

impl Catalog {
    /// Builds the catalog of `crds` (their first served version).
    pub fn new(crds: &[CustomResourceDefinition]) -> Self {
        let entries = crds
            .iter()
            .filter_map(|crd| {
                let version = crd.spec.versions.first()?.name.clone();
                Some((
                    crd.spec.names.kind.clone(),
                    crd.spec.group.clone(),
                    version,
                    crd.spec.names.plural.clone(),
                    crd.spec.scope == "Namespaced",
                ))
            })
            .collect();
        Self { entries }
    }

    /// An API handle for the document's kind and namespace.
    pub fn api_for(&self, client: &kube::Client, doc: &Value) -> Option<Api<DynamicObject>> {
        let kind = doc["kind"].as_str()?;
        let (_, group, version, plural, namespaced) =
            self.entries.iter().find(|(k, ..)| k == kind)?;
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        Some(if *namespaced {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        })
    }
}

/// Server-side applies one manifest with strict field validation (unknown fields fail, as
/// with `kubectl apply`).
pub async fn apply(
    client: &kube::Client,
    catalog: &Catalog,
    doc: &Value,
) -> Result<DynamicObject, kube::Error> {
    let api = catalog.api_for(client, doc).ok_or_else(|| {
        kube::Error::Service(format!("no CRD installed for kind {}", doc["kind"]).into())
    })?;
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.field_validation = Some(ValidationDirective::Strict);
    api.patch(name, &params, &Patch::Apply(doc)).await
}

/// Creates namespaces (ignoring ones that exist).
pub async fn create_namespaces(client: &kube::Client, names: &[&str]) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&ns))
            .await?;
    }
    Ok(())
}

/// Directory of db-provision-operator v0.14's CRDs (`DBPROV_REFERENCE_CRDS`, else
/// `../shared/reference/dpo-v0.14-crds` beside the repository). They are read at test time
/// and never copied into the repository. `None` (with a loud message) when absent outside
/// CI; in CI their absence fails the test.
pub fn reference_crds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DBPROV_REFERENCE_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/dpo-v0.14-crds")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "reference CRDs not found at {} (set DBPROV_REFERENCE_CRDS)",
        dir.display()
    );
    if crate::tools::in_ci() {
        panic!("{msg}");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "!!!!! SKIPPED: {msg}");
    None
}
