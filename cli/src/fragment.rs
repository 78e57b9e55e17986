//! Building a configuration fragment from `configure` flags, and reading one from a file.
//!
//! Pure functions: the flags arrive in command-line order (see `args.rs`), so an
//! `--interface NAME` starts an interface block and the interface flags after it apply to it.

use std::fmt;
use std::path::Path;

use api::validate::check_ifname;
use api::{InterfaceSpec, InterfaceType, LinkMode, LinkState, NetworkConfigurationSpec, RouteSpec};

use crate::error::{Error, Result};

/// One interface flag of `configure`, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceFlag {
    Interface(String),
    Type(InterfaceType),
    Parent(String),
    VlanId(u16),
    Mode(LinkMode),
    Vni(u32),
    Peer(String),
    Mtu(u32),
    State(LinkState),
    Address(String),
}

impl IfaceFlag {
    /// The flag as the user typed it, for messages.
    pub fn flag(&self) -> &'static str {
        match self {
            IfaceFlag::Interface(_) => "--interface",
            IfaceFlag::Type(_) => "--type",
            IfaceFlag::Parent(_) => "--parent",
            IfaceFlag::VlanId(_) => "--vlan-id",
            IfaceFlag::Mode(_) => "--mode",
            IfaceFlag::Vni(_) => "--vni",
            IfaceFlag::Peer(_) => "--peer",
            IfaceFlag::Mtu(_) => "--mtu",
            IfaceFlag::State(_) => "--state",
            IfaceFlag::Address(_) => "--address",
        }
    }

    fn value(&self) -> String {
        match self {
            IfaceFlag::Interface(s)
            | IfaceFlag::Parent(s)
            | IfaceFlag::Peer(s)
            | IfaceFlag::Address(s) => s.clone(),
            IfaceFlag::Type(t) => t.as_str().to_string(),
            IfaceFlag::VlanId(n) => n.to_string(),
            IfaceFlag::Vni(n) | IfaceFlag::Mtu(n) => n.to_string(),
            IfaceFlag::Mode(m) => serde_plain(m),
            IfaceFlag::State(s) => serde_plain(s),
        }
    }
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A mistake in the `configure` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

/// Builds the fragment the flags describe. Interface flags before the first `--interface`,
/// or given twice for one interface, are errors; so is an interface named twice.
pub fn build(
    flags: &[IfaceFlag],
    routes: &[RouteSpec],
) -> Result<NetworkConfigurationSpec, FlagError> {
    let mut interfaces: Vec<InterfaceSpec> = Vec::new();
    for flag in flags {
        if let IfaceFlag::Interface(name) = flag {
            if interfaces.iter().any(|i| &i.name == name) {
                return Err(FlagError(format!(
                    "--interface {name} is given twice; give each interface's flags once, after its --interface"
                )));
            }
            interfaces.push(InterfaceSpec {
                name: name.clone(),
                ..InterfaceSpec::default()
            });
            continue;
        }
        let Some(iface) = interfaces.last_mut() else {
            return Err(FlagError(format!(
                "{} {} comes before any --interface: start an interface with --interface NAME, then give its {}",
                flag.flag(),
                flag.value(),
                flag.flag()
            )));
        };
        let name = iface.name.clone();
        let twice = || {
            FlagError(format!(
                "{} is given twice for --interface {name}",
                flag.flag()
            ))
        };
        let mut kind = None;
        match flag {
            IfaceFlag::Interface(_) => {} // handled above
            IfaceFlag::Type(t) => kind = Some(*t),
            IfaceFlag::Parent(p) => set(&mut iface.parent, p.clone(), twice)?,
            IfaceFlag::VlanId(id) => set(&mut iface.vlan_id, *id, twice)?,
            IfaceFlag::Mode(m) => set(&mut iface.mode, *m, twice)?,
            IfaceFlag::Vni(v) => set(&mut iface.vni, *v, twice)?,
            IfaceFlag::Peer(p) => set(&mut iface.peer, p.clone(), twice)?,
            IfaceFlag::Mtu(m) => set(&mut iface.mtu, *m, twice)?,
            IfaceFlag::State(s) => set(&mut iface.state, *s, twice)?,
            IfaceFlag::Address(a) => {
                if iface.addresses.contains(a) {
                    return Err(FlagError(format!(
                        "--address {a} is given twice for --interface {}",
                        iface.name
                    )));
                }
                iface.addresses.push(a.clone());
            }
        }
        if let Some(t) = kind {
            // `existing` is the default, so only a second explicit --type is a mistake.
            let mut slot = (iface.kind != InterfaceType::Existing).then_some(iface.kind);
            set(&mut slot, t, twice)?;
            iface.kind = t;
        }
    }
    Ok(NetworkConfigurationSpec {
        interfaces,
        routes: routes.to_vec(),
        ..Default::default()
    })
}

fn set<T>(slot: &mut Option<T>, v: T, twice: impl Fn() -> FlagError) -> Result<(), FlagError> {
    if slot.is_some() {
        return Err(twice());
    }
    *slot = Some(v);
    Ok(())
}

// === value parsers (clap `value_parser`s; their `Err` becomes a usage error) ===

/// An interface name by the kernel's rules.
pub fn parse_ifname(s: &str) -> Result<String, String> {
    check_ifname(s).map(|()| s.to_string())
}

/// An interface address in CIDR form, host bits kept (`10.0.0.5/24`), by the validator's rule.
pub fn parse_address(s: &str) -> Result<String, String> {
    api::validate::check_address(s).map(|_| s.to_string())
}

/// Any enum of the API by its wire spelling (`vlan`, `up`, `bridge`...).
pub fn parse_wire_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

/// `--route DST[,via=GW][,dev=IF][,metric=N][,table=N]`. `DST` is a network in CIDR form, or
/// `default` (IPv4 or IPv6 after `via`; `0.0.0.0/0` without it).
pub fn parse_route(s: &str) -> Result<RouteSpec, String> {
    let mut parts = s.split(',');
    let dst = ascii_trim(parts.next().unwrap_or_default());
    if dst.is_empty() {
        return Err(format!(
            "{s:?}: a route starts with its destination, e.g. 10.1.0.0/16,via=10.0.0.1"
        ));
    }
    let mut route = RouteSpec::default();
    let mut seen: Vec<&str> = Vec::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "{s:?}: {part:?} is not key=value (keys: via, dev, metric, table)"
            ));
        };
        let (key, value) = (ascii_trim(key), ascii_trim(value));
        if seen.contains(&key) {
            return Err(format!("{s:?}: {key} is given twice"));
        }
        seen.push(key);
        match key {
            "via" => route.via = Some(value.to_string()),
            "dev" => route.dev = Some(value.to_string()),
            "metric" => {
                route.metric = value
                    .parse()
                    .map_err(|_| format!("{s:?}: metric {value:?} is not a number 0-4294967295"))?;
            }
            "table" => {
                route.table = match value {
                    "main" => api::netconf::MAIN_TABLE,
                    _ => value.parse().map_err(|_| {
                        format!("{s:?}: table {value:?} is not a table id (a number, or main)")
                    })?,
                };
            }
            _ => {
                return Err(format!(
                    "{s:?}: unknown key {key:?} (keys: via, dev, metric, table)"
                ))
            }
        }
    }
    // `default` is the default route of the gateway's family
    let via_v6 = route
        .via
        .as_deref()
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.is_ipv6());
    route.dst = match (dst, via_v6) {
        ("default", Some(true)) => "::/0".to_string(),
        ("default", _) => "0.0.0.0/0".to_string(),
        (dst, _) => dst.to_string(),
    };
    if route.via.is_none() && route.dev.is_none() {
        return Err(format!(
            "{s:?}: a route needs via=GATEWAY, dev=INTERFACE or both"
        ));
    }
    // The values (CIDR, host bits, family, spelling) are the one validator's to judge.
    let alone = NetworkConfigurationSpec {
        interfaces: vec![],
        routes: vec![route.clone()],
        ..Default::default()
    };
    api::validate_fragment(&alone).map_err(|invalid| {
        let reasons: Vec<String> = invalid
            .0
            .iter()
            .map(|p| match p.field.strip_prefix("spec.routes[0].") {
                Some(key) => format!("{key} {}", p.message),
                None => p.message.clone(),
            })
            .collect();
        format!("{s:?}: {}", reasons.join("; "))
    })?;
    Ok(route)
}

/// Trims ASCII spaces only: `str::trim` would also eat bytes such as U+00A0 that the
/// validator must see (and refuse) in a name.
fn ascii_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

// === files ===

/// Reads a fragment from YAML or JSON (`-` is stdin): either a spec fragment
/// (`interfaces:`/`routes:`) or a whole `NetworkConfiguration`, whose `spec` is used.
pub fn load(path: &Path) -> Result<NetworkConfigurationSpec> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_document(&text).map_err(|message| Error::ParseFile {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses the text of a `-f` file (YAML is a superset of JSON, so one parser reads both).
pub fn parse_document(text: &str) -> Result<NetworkConfigurationSpec, String> {
    // The common file, a fragment, is read straight into its type (JSON by the JSON parser):
    // through a YAML value it costs a 1,500-entry file 2-3 times as long. A whole object or a
    // mistake fails this (the spec refuses unknown fields), and an empty file reads as an
    // empty spec, as `{}` does: those are read below, which tells them apart.
    let direct: Option<NetworkConfigurationSpec> = match text.trim_start().starts_with('{') {
        true => serde_json::from_str(text).ok(),
        false => serde_yaml::from_str(text).ok(),
    };
    if let Some(spec) = direct.filter(|s| *s != NetworkConfigurationSpec::default()) {
        return Ok(spec);
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let doc = match doc {
        // An empty file is a mistake, not "declare nothing": that would wipe this manager's
        // entries. Declaring nothing is `{}`; removing them is `nescli unconfigure`.
        serde_yaml::Value::Null => {
            return Err(
                "the file is empty: write {} to declare nothing, or use nescli unconfigure to remove this manager's entries".into(),
            )
        }
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(
                "expected a mapping with interfaces/routes, or a NetworkConfiguration".into(),
            )
        }
    };
    let is_object = ["apiVersion", "kind", "metadata", "spec"]
        .iter()
        .any(|k| doc.contains_key(*k));
    let spec = if is_object {
        match doc.get("kind").and_then(serde_yaml::Value::as_str) {
            None | Some("NetworkConfiguration") => {}
            Some(other) => {
                return Err(format!(
                    "kind {other} is not NetworkConfiguration; give a NetworkConfiguration or a spec fragment"
                ))
            }
        }
        match doc.get("spec") {
            Some(spec) => spec.clone(),
            None => return Err("the NetworkConfiguration has no spec".into()),
        }
    } else {
        serde_yaml::Value::Mapping(doc)
    };
    if spec.is_null() {
        return Ok(NetworkConfigurationSpec::default());
    }
    serde_yaml::from_value(spec).map_err(|e| format!("spec: {e}"))
}

#[cfg(test)]
mod tests;
