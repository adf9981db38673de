//! The manifests of `tests/corpus/valid` and `docs/examples`, for the payload tests: every
//! object of a kind, parsed as the API type.

#![allow(clippy::unwrap_used, clippy::expect_used)]

const FILES: &[(&str, &str)] = &[
    (
        "tests/corpus/valid/dpo/instances.yaml",
        include_str!("../../../../tests/corpus/valid/dpo/instances.yaml"),
    ),
    (
        "tests/corpus/valid/dpo/databases.yaml",
        include_str!("../../../../tests/corpus/valid/dpo/databases.yaml"),
    ),
    (
        "tests/corpus/valid/dpo/users.yaml",
        include_str!("../../../../tests/corpus/valid/dpo/users.yaml"),
    ),
    (
        "tests/corpus/valid/dpo/roles-grants.yaml",
        include_str!("../../../../tests/corpus/valid/dpo/roles-grants.yaml"),
    ),
    (
        "tests/corpus/valid/dpo/backups.yaml",
        include_str!("../../../../tests/corpus/valid/dpo/backups.yaml"),
    ),
    (
        "tests/corpus/valid/dbprov/additions.yaml",
        include_str!("../../../../tests/corpus/valid/dbprov/additions.yaml"),
    ),
    (
        "docs/examples/00-instances.yaml",
        include_str!("../../../../docs/examples/00-instances.yaml"),
    ),
    (
        "docs/examples/10-databases.yaml",
        include_str!("../../../../docs/examples/10-databases.yaml"),
    ),
    (
        "docs/examples/20-roles.yaml",
        include_str!("../../../../docs/examples/20-roles.yaml"),
    ),
    (
        "docs/examples/30-users.yaml",
        include_str!("../../../../docs/examples/30-users.yaml"),
    ),
    (
        "docs/examples/40-grants.yaml",
        include_str!("../../../../docs/examples/40-grants.yaml"),
    ),
    (
        "docs/examples/50-backups.yaml",
        include_str!("../../../../docs/examples/50-backups.yaml"),
    ),
];

/// Every manifest of `kind`, as JSON, with the file it came from.
pub(crate) fn manifests(kind: &str) -> Vec<(&'static str, serde_json::Value)> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (file, text) in FILES {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let Ok(v) = serde_json::Value::deserialize(doc) else {
                continue;
            };
            if v["kind"] == kind {
                out.push((*file, v));
            }
        }
    }
    out
}

/// Every manifest of `kind`, parsed as `K` (a manifest that does not parse fails the test).
pub(crate) fn objects<K: serde::de::DeserializeOwned>(kind: &str) -> Vec<(String, K)> {
    let found: Vec<_> = manifests(kind)
        .into_iter()
        .map(|(file, v)| {
            let label = format!("{file}: {kind} {}", v["metadata"]["name"]);
            let obj = serde_json::from_value(v).unwrap_or_else(|e| panic!("{label}: {e}"));
            (label, obj)
        })
        .collect();
    assert!(!found.is_empty(), "no {kind} in the corpus");
    found
}

/// Asserts that `value` survives the JSON round trip through its own contract type.
pub(crate) fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = dbprov_contract::to_json(value);
    let back: T = dbprov_contract::from_json(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(&back, value, "{json}");
}

/// `today` (the JSON the hub sent before the contract) read as the contract type `T`.
pub(crate) fn as_contract<T: serde::de::DeserializeOwned>(today: serde_json::Value) -> T {
    let text = today.to_string();
    dbprov_contract::from_json(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}
