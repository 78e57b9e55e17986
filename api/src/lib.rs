//! nes's API: the custom resources, the one validator shared by every entry point,
//! the REST wire types and the status model. No I/O here.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod attach;
pub mod care;
pub mod conditions;
pub mod crd;
pub mod eventlog;
pub mod host;
pub mod installation;
pub mod limits;
pub mod merge;
pub mod netconf;
pub mod netsvc;
pub mod openapi;
pub mod policy;
pub mod validate;
pub mod wire;

pub use attach::{AttachmentSpec, AttachmentStatus, NetworkStatus};
pub use care::{NetworkCare, NetworkCareSpec, NetworkCareStatus};
pub use installation::{NesInstallation, NesInstallationSpec, NesInstallationStatus};
pub use netconf::{
    InterfaceSpec, InterfaceStatus, InterfaceType, LinkMode, LinkState, NetnsIdentity,
    NetworkConfiguration, NetworkConfigurationSpec, NetworkConfigurationStatus, ObjectState,
    RouteKey, RouteSpec, RouteStatus, VlanProtocol,
};
pub use netsvc::{NetworkService, NetworkServiceSpec, NetworkServiceStatus};
pub use policy::{NetworkConfigurationPolicy, NetworkConfigurationPolicySpec};
pub use validate::{validate, validate_care, validate_fragment, validate_network_service, Problem};

/// API group of every nes resource.
pub const GROUP: &str = "nes.network-config.io";
/// Pod-template label by which a workload opts in (the seed's label, kept exactly).
pub const SELECTION_LABEL: &str = "network-config/runtime-ip";
/// Label on a `NetworkConfiguration` naming the node its pod runs on.
pub const NODE_LABEL: &str = "nes.network-config.io/node";
/// Pod annotation opting out of readiness gating.
pub const READINESS_ANNOTATION: &str = "nes.network-config.io/readiness";
