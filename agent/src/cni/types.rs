//! The CNI result and error objects (spec 1.0 §5), as serde types. Fields nes does not read
//! are kept (`extra`), so a result handed on as `prevResult` or cached loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A plugin's success result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<ResultInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<ResultIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ResultRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<api::attach::Dns>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultInterface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for an interface inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultIp {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultRoute {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A plugin's error object (printed on stdout with a non-zero exit).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CniErrorObject {
    #[serde(default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniResult {
    /// The NPWG status entry of the interface `ifname` in the netns at `netns`.
    pub fn network_status(&self, network: &str, ifname: &str, netns: &str) -> api::NetworkStatus {
        let index = self
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox.as_deref().is_none_or(|s| s == netns));
        let iface = index.map(|i| &self.interfaces[i]);
        // An address without an interface index belongs to the attachment as a whole.
        let ips: Vec<&ResultIp> = self
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
            .collect();
        api::NetworkStatus {
            name: network.to_string(),
            interface: ifname.to_string(),
            ips: ips
                .iter()
                .map(|ip| ip.address.split('/').next().unwrap_or_default().to_string())
                .collect(),
            mac: iface.and_then(|i| i.mac.clone()),
            mtu: iface.and_then(|i| i.mtu),
            default: false,
            gateway: ips.iter().filter_map(|ip| ip.gateway.clone()).collect(),
            dns: self
                .dns
                .clone()
                .filter(|d| *d != api::attach::Dns::default()),
        }
    }
}
