//! Reading Secrets in the workload cluster. Values stay in this process: errors name the
//! Secret and the key, never the value.

use std::collections::BTreeMap;

use dbprov_proto::agent::v1::ErrorCode;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::error::OpError;

/// Reads `keys` of Secret `namespace/name` as UTF-8 strings.
pub async fn read_keys(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    keys: &[&str],
) -> Result<BTreeMap<String, String>, OpError> {
    let raw = read_raw(client, namespace, name, keys).await?;
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let text = String::from_utf8(value).map_err(|_| {
            OpError::new(
                ErrorCode::Invalid,
                format!("Secret {namespace}/{name} key {key:?} is not UTF-8 text"),
                false,
            )
        })?;
        out.insert(key, text);
    }
    Ok(out)
}

/// Reads `keys` of Secret `namespace/name` as bytes (key material need not be text).
pub async fn read_raw(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    keys: &[&str],
) -> Result<BTreeMap<String, Vec<u8>>, OpError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| {
            OpError::new(
                ErrorCode::SecretMissing,
                format!("cannot read Secret {namespace}/{name} in the workload cluster: {e}"),
                true,
            )
        })?
        .ok_or_else(|| {
            OpError::new(
                ErrorCode::SecretMissing,
                format!("Secret {namespace}/{name} does not exist in the workload cluster"),
                true,
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let mut out = BTreeMap::new();
    for key in keys {
        let value = data.get(*key).ok_or_else(|| {
            let present: Vec<_> = data.keys().cloned().collect();
            OpError::new(
                ErrorCode::SecretMissing,
                format!(
                    "Secret {namespace}/{name} has no key {key:?} (keys present: {})",
                    present.join(", ")
                ),
                true,
            )
        })?;
        out.insert((*key).to_owned(), value.0.clone());
    }
    Ok(out)
}
