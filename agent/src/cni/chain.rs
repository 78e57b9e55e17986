//! A list's plugins run in order for ADD, each handed the previous one's result as
//! `prevResult`; in reverse for DEL with the cached result; in order for CHECK with it
//! (libcni's `AddNetworkList`, `DelNetworkList`, `CheckNetworkList`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tracing::debug;

use super::conf::ConfList;
use super::exec::{self, Command, RuntimeConf};
use super::{CniError, CniOptions};

/// What an attachment asks of its plugins beyond the list: runtime capabilities (only
/// plugins declaring them get them) and `args.cni`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    /// e.g. `ips` -> `["10.1.0.5/24"]`, `mac` -> `"02:…"`.
    pub capabilities: BTreeMap<String, Value>,
    pub cni_args: BTreeMap<String, String>,
}

impl Extras {
    pub fn of(attachment: &api::AttachmentSpec) -> Self {
        let mut capabilities = BTreeMap::new();
        if !attachment.ips.is_empty() {
            capabilities.insert("ips".into(), Value::from(attachment.ips.clone()));
        }
        if let Some(mac) = &attachment.mac {
            capabilities.insert("mac".into(), Value::from(mac.clone()));
        }
        Self {
            capabilities,
            cni_args: attachment.cni_args.clone(),
        }
    }
}

/// The configuration plugin `i` of `list` reads on stdin (pure): its own object with the
/// list's `name` and `cniVersion`, `prevResult` when given, `runtimeConfig` with the
/// capabilities it declares, and `args.cni`.
pub fn plugin_config(list: &ConfList, i: usize, prev: Option<&Value>, extras: &Extras) -> Vec<u8> {
    let mut conf: Map<String, Value> = list.plugins[i].clone();
    conf.insert("name".into(), list.name.clone().into());
    conf.insert("cniVersion".into(), list.cni_version.clone().into());
    match prev {
        Some(p) => conf.insert("prevResult".into(), p.clone()),
        None => conf.remove("prevResult"),
    };
    let declared = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let runtime: Map<String, Value> = extras
        .capabilities
        .iter()
        .filter(|(k, _)| declared.get(k.as_str()).and_then(Value::as_bool) == Some(true))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    if !extras.cni_args.is_empty() {
        let args = conf
            .entry("args")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(args) = args.as_object_mut() {
            let cni: Map<String, Value> = extras
                .cni_args
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            args.insert("cni".into(), Value::Object(cni));
        }
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// ADD through the whole list: the last plugin's result.
pub async fn add(
    opts: &CniOptions,
    list: &ConfList,
    rt: &RuntimeConf,
    extras: &Extras,
) -> Result<Value, CniError> {
    let mut prev: Option<Value> = None;
    for i in 0..list.plugins.len() {
        let stdin = plugin_config(list, i, prev.as_ref(), extras);
        let plugin = list.plugin_type(i);
        debug!(plugin, ifname = %rt.ifname, "CNI ADD");
        let out = exec::run(
            &opts.bin_dirs,
            plugin,
            Command::Add,
            rt,
            &stdin,
            opts.timeout,
        )
        .await?;
        prev = Some(out.ok_or_else(|| CniError::BadOutput {
            plugin: plugin.to_string(),
            message: "ADD printed no result".into(),
        })?);
    }
    prev.ok_or_else(|| CniError::Args("a network without plugins".into()))
}

/// DEL through the list in reverse; every plugin is called even when one fails (what it
/// holds, an IP most of all, must be released), the first failure is returned.
pub async fn del(
    opts: &CniOptions,
    list: &ConfList,
    rt: &RuntimeConf,
    extras: &Extras,
    cached: Option<&Value>,
) -> Result<(), CniError> {
    let mut first = None;
    for i in (0..list.plugins.len()).rev() {
        let stdin = plugin_config(list, i, cached, extras);
        let plugin = list.plugin_type(i);
        debug!(plugin, ifname = %rt.ifname, "CNI DEL");
        if let Err(e) = exec::run(
            &opts.bin_dirs,
            plugin,
            Command::Del,
            rt,
            &stdin,
            opts.timeout,
        )
        .await
        {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK through the list with the cached result.
pub async fn check(
    opts: &CniOptions,
    list: &ConfList,
    rt: &RuntimeConf,
    extras: &Extras,
    cached: &Value,
) -> Result<(), CniError> {
    for i in 0..list.plugins.len() {
        let stdin = plugin_config(list, i, Some(cached), extras);
        let plugin = list.plugin_type(i);
        exec::run(
            &opts.bin_dirs,
            plugin,
            Command::Check,
            rt,
            &stdin,
            opts.timeout,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_plugin_gets_the_list_name_prev_result_and_only_the_capabilities_it_declares() {
        let list = ConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"data","plugins":[
                {"type":"macvlan","ipam":{"type":"static"},"capabilities":{"ips":true}},
                {"type":"tuning","capabilities":{"mac":true}}]}"#,
        )
        .unwrap();
        let extras = Extras::of(&api::AttachmentSpec {
            name: "data".into(),
            ips: vec!["10.1.0.5/24".into()],
            mac: Some("02:00:00:00:00:01".into()),
            cni_args: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        });
        let first: Value = serde_json::from_slice(&plugin_config(&list, 0, None, &extras)).unwrap();
        assert_eq!(first["name"], "data");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["runtimeConfig"], json!({"ips": ["10.1.0.5/24"]}));
        assert_eq!(first["args"], json!({"cni": {"k": "v"}}));
        assert!(first.get("prevResult").is_none());
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]});
        let second: Value =
            serde_json::from_slice(&plugin_config(&list, 1, Some(&prev), &extras)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"], json!({"mac": "02:00:00:00:00:01"}));
    }
}
