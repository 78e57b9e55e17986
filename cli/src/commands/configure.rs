//! `nescli configure`: PUT this manager's fragment.

use api::wire::ConfigView;
use http::Method;

use super::{manager_name, Context};
use crate::args::ConfigureArgs;
use crate::error::{Error, Result};
use crate::{fragment, output};

pub async fn run(ctx: &Context, args: ConfigureArgs) -> Result<()> {
    let spec = match (&args.file, args.fragment) {
        (Some(path), _) => fragment::load(path)?,
        (None, Some(spec)) => spec,
        (None, None) => {
            return Err(Error::Usage(
                "configure needs -f FILE, or --interface/--route flags".into(),
            ))
        }
    };
    // The fragment's own values and repeats are checked here with the one validator; the
    // server validates the merged spec of every manager (a fragment may rely on entries
    // another manager declared).
    api::validate_fragment(&spec).map_err(|invalid| Error::Usage(invalid.to_string()))?;
    let manager = manager_name(args.manager.manager);
    let body = serde_json::to_vec(&spec)
        .map_err(|e| Error::Usage(format!("cannot encode the fragment: {e}")))?;
    let uri = ctx.client.uri("/v1/self/config", &[("manager", &manager)]);
    let view: ConfigView = ctx
        .client
        .json(Method::PUT, &uri, Some(body), ctx.deadline())
        .await?;
    output::config(&mut std::io::stdout().lock(), ctx.output, &view)
}
