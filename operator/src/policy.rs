//! The admin policy as the operator sees it: the shared reflector view
//! ([`common::policy_view`]) and the one evaluation of [`api::policy`].
//!
//! Fail closed: until both lists have completed once (and for a namespace the reflector
//! has not seen yet), an evaluation answers [`Refusal::Unavailable`], which the entrances
//! turn into 503 + Retry-After (cliserver) or a denial (admission).

pub use api::policy::Refusal;
pub use common::policy_view::PolicyView;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Seconds a caller refused for want of the policy view is told to wait.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The view, its watches running on `client` until `shutdown`.
pub fn start(client: kube::Client, shutdown: CancellationToken) -> PolicyView {
    let (view, mut changes) = PolicyView::watch(client);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = changes.next() => match next {
                    Some(Ok(())) => {}
                    Some(Err(error)) => warn!(%error, "policy view watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
    view
}
