//! Network configuration lists: found by their `name` in a directory, the way libcni's
//! `LoadConfList` does (files in name order, `*.conflist` as lists, `*.conf` and `*.json`
//! as single plugin configurations wrapped in a list).

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::CniError;

/// A configuration file larger than this is refused unread (a network list is a few KiB).
pub const MAX_CONF_BYTES: u64 = 1024 * 1024;

/// One network: its name, version and plugins, and the bytes it was read from (what the
/// cache keeps, and how a changed network is noticed).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    pub bytes: Vec<u8>,
}

impl ConfList {
    /// Parses a list (`plugins`) or a single plugin configuration (`type`).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let doc: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object: {e}"))?;
        let text = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_string);
        let name = text("name").ok_or("no \"name\"")?;
        let cni_version = text("cniVersion").unwrap_or_else(|| "1.0.0".into());
        let plugins = match (doc.get("plugins"), doc.get("type")) {
            (Some(Value::Array(list)), _) => list
                .iter()
                .map(|p| p.as_object().cloned().ok_or("a plugin is not an object"))
                .collect::<Result<Vec<_>, _>>()?,
            (Some(_), _) => return Err("\"plugins\" is not a list".into()),
            (None, Some(_)) => vec![doc.clone()],
            (None, None) => return Err("neither \"plugins\" nor \"type\"".into()),
        };
        if plugins.is_empty() {
            return Err("no plugins".into());
        }
        for p in &plugins {
            let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
            check_plugin_type(kind)?;
        }
        Ok(Self {
            name,
            cni_version,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// The configuration of a NetworkAttachmentDefinition (`spec.config`): a list or a
    /// single plugin, named after the NAD when it names itself nothing (as Multus does).
    pub fn from_nad(nad_name: &str, config: &str) -> Result<Self, String> {
        if config.len() as u64 > MAX_CONF_BYTES {
            return Err(format!("spec.config is larger than {MAX_CONF_BYTES} bytes"));
        }
        let mut doc: Map<String, Value> = serde_json::from_str(config)
            .map_err(|e| format!("spec.config is not a JSON object: {e}"))?;
        let named = doc.get("name").and_then(Value::as_str).unwrap_or_default();
        if named.is_empty() {
            doc.insert("name".into(), Value::String(nad_name.to_string()));
            let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
            return Self::parse(&bytes);
        }
        Self::parse(config.as_bytes())
    }

    /// The `type` (binary name) of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A plugin type names a file in a bin dir: never a path.
fn check_plugin_type(kind: &str) -> Result<(), String> {
    let ok = !kind.is_empty()
        && kind != "."
        && kind != ".."
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("plugin type {kind:?} is not a plugin name"))
    }
}

/// Finds the network called `name` in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<ConfList, CniError> {
    let missing = || CniError::NoNetwork {
        name: name.to_string(),
        dir: dir.display().to_string(),
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    for path in files {
        let Ok(bytes) = read_bounded(&path) else {
            continue;
        };
        // Other files may be broken or someone else's: only the one named matters.
        match ConfList::parse(&bytes) {
            Ok(list) if list.name == name => return Ok(list),
            Err(message) if named(&bytes).as_deref() == Some(name) => {
                return Err(CniError::BadConf {
                    path: path.display().to_string(),
                    message,
                })
            }
            _ => {}
        }
    }
    Err(missing())
}

fn named(bytes: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    Some(doc.get("name")?.as_str()?.to_string())
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONF_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONF_BYTES {
        return Err(std::io::Error::other("too large"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_found_by_name_and_a_single_conf_becomes_a_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"tuning"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"macvlan"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("30-broken.conflist"), "{").unwrap();
        let a = find(dir.path(), "a").unwrap();
        assert_eq!((a.plugin_type(0), a.plugin_type(1)), ("bridge", "tuning"));
        let b = find(dir.path(), "b").unwrap();
        assert_eq!(b.plugins.len(), 1);
        assert_eq!(b.plugin_type(0), "macvlan");
        assert!(matches!(
            find(dir.path(), "c"),
            Err(CniError::NoNetwork { .. })
        ));
    }

    #[test]
    fn a_nad_config_is_named_after_the_nad_only_when_it_names_itself_nothing() {
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","name":"own","type":"macvlan"}"#,
                Ok("own"),
            ),
            (r#"{"cniVersion":"1.0.0","type":"macvlan"}"#, Ok("nad")),
            (r#"{"name":"","plugins":[{"type":"bridge"}]}"#, Ok("nad")),
            (r#"{"name":"x","plugins":[{"type":"../sh"}]}"#, Err(())),
            ("", Err(())),
            ("[]", Err(())),
        ];
        for (config, want) in cases {
            let got = ConfList::from_nad("nad", config);
            assert_eq!(
                got.as_ref().map(|l| l.name.as_str()).map_err(|_| ()),
                want,
                "{config}"
            );
        }
    }

    #[test]
    fn a_plugin_type_that_is_a_path_is_refused() {
        for t in ["../../bin/sh", "/bin/sh", "", ".."] {
            let text = format!(r#"{{"name":"a","plugins":[{{"type":"{t}"}}]}}"#);
            assert!(ConfList::parse(text.as_bytes()).is_err(), "{t:?}");
        }
    }
}
