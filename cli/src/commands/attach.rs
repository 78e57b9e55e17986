//! `nescli attach` / `nescli detach`: one CNI network attachment as its own fragment, so
//! each attachment has one owner and detaching one never touches the others.

use api::wire::ConfigView;
use api::{AttachmentSpec, NetworkConfigurationSpec};
use http::Method;

use super::Context;
use crate::args::{AttachArgs, DetachArgs};
use crate::error::{Error, Result};
use crate::output;

/// The manager of an attachment's fragment unless `--manager` names one.
pub fn attach_manager(explicit: Option<String>, network: &str) -> String {
    explicit.unwrap_or_else(|| format!("attach:{network}"))
}

pub async fn attach(ctx: &Context, args: AttachArgs) -> Result<()> {
    let spec = NetworkConfigurationSpec {
        attachments: vec![AttachmentSpec {
            name: args.network.clone(),
            interface: args.interface,
            ips: args.ip,
            mac: args.mac,
            ..Default::default()
        }],
        ..Default::default()
    };
    api::validate_fragment(&spec).map_err(|invalid| Error::Usage(invalid.to_string()))?;
    let manager = attach_manager(args.manager, &args.network);
    let body = serde_json::to_vec(&spec)
        .map_err(|e| Error::Usage(format!("cannot encode the attachment: {e}")))?;
    let uri = ctx.client.uri("/v1/self/config", &[("manager", &manager)]);
    let view: ConfigView = ctx
        .client
        .json(Method::PUT, &uri, Some(body), ctx.deadline())
        .await?;
    output::config(&mut std::io::stdout().lock(), ctx.output, &view)
}

pub async fn detach(ctx: &Context, args: DetachArgs) -> Result<()> {
    let manager = attach_manager(args.manager, &args.network);
    super::unconfigure::remove(ctx, &manager).await
}
