//! The standalone agent's `--policy FILE`: the same resources as in a cluster, as a YAML
//! stream of `NetworkConfigurationPolicy` documents, each validated.

use serde::Deserialize;

use super::{validate_policy, NetworkConfigurationPolicy};
use crate::GROUP;

/// Why a policy file cannot be used; the agent refuses to start on it rather than run
/// with fewer restrictions than the admin wrote.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("document {index}: not YAML nes can read: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml::Error,
    },
    #[error("document {index}: expected apiVersion {GROUP}/v1alpha1 kind NetworkConfigurationPolicy, got {api_version} {kind}")]
    Kind {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {index}: a policy needs metadata.name")]
    Unnamed { index: usize },
    #[error("policy {name:?}: {source}")]
    Invalid {
        name: String,
        source: crate::validate::Invalid,
    },
}

/// Reads every policy of a YAML stream (empty documents are skipped). Each document must
/// be a named, valid `NetworkConfigurationPolicy`; the first problem fails the whole file.
pub fn parse_policy_file(text: &str) -> Result<Vec<NetworkConfigurationPolicy>, PolicyFileError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|source| PolicyFileError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let text_of = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind) = (text_of("apiVersion"), text_of("kind"));
        if api_version != format!("{GROUP}/v1alpha1") || kind != "NetworkConfigurationPolicy" {
            return Err(PolicyFileError::Kind {
                index,
                api_version,
                kind,
            });
        }
        let policy: NetworkConfigurationPolicy = serde_yaml::from_value(value)
            .map_err(|source| PolicyFileError::Yaml { index, source })?;
        let Some(name) = policy.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return Err(PolicyFileError::Unnamed { index });
        };
        validate_policy(&policy.spec)
            .map_err(|source| PolicyFileError::Invalid { name, source })?;
        out.push(policy);
    }
    Ok(out)
}
