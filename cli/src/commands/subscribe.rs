//! `nescli subscribe NAME`: create a NetworkCare in the pod's namespace (over the pod socket)
//! or in `--namespace` (over `--url`).

use api::care::{Delivery, DeliveryMode};
use api::wire::{CareView, NewCare, ProblemDetails};
use api::NetworkCareSpec;
use http::Method;

use super::Context;
use crate::args::SubscribeArgs;
use crate::error::{Error, Result};
use crate::output;

/// The subscriptions of the namespace, as the pod socket names them (the client maps it to
/// the cliserver's `/v1/namespaces/{ns}/networkcares` over `--url`).
pub const CARES_PATH: &str = "/v1/self/networkcares";

/// The subscription the flags describe.
pub fn new_care(args: SubscribeArgs) -> NewCare {
    let delivery = match args.webhook {
        Some(url) => Delivery {
            mode: DeliveryMode::Webhook,
            url: Some(url),
        },
        None => Delivery::default(),
    };
    NewCare {
        name: args.name,
        spec: NetworkCareSpec {
            selector: args.selector,
            pod_names: args.pod_names,
            events: args.events,
            delivery,
        },
    }
}

pub async fn run(ctx: &Context, args: SubscribeArgs) -> Result<()> {
    let new = new_care(args);
    // The one validator the server also runs: a bad spec is refused before any request.
    api::validate::validate_care(&new.spec)
        .map_err(|invalid| Error::Rejected(Box::new(ProblemDetails::invalid(&invalid))))?;
    let body = serde_json::to_vec(&new)
        .map_err(|e| Error::Usage(format!("cannot encode the subscription: {e}")))?;
    let uri = ctx.client.uri(CARES_PATH, &[]);
    let view: CareView = ctx
        .client
        .json(Method::POST, &uri, Some(body), ctx.deadline())
        .await?;
    output::care(&mut std::io::stdout().lock(), ctx.output, &view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn parse(args: &[&str]) -> NewCare {
        let cli = Cli::try_parse_args(args).unwrap();
        let Command::Subscribe(s) = cli.command else {
            panic!("not subscribe")
        };
        new_care(s)
    }

    #[test]
    fn subscribe_flags_become_a_new_care() {
        let care = parse(&[
            "nescli",
            "--url",
            "https://nes",
            "subscribe",
            "mon",
            "--selector",
            "app=web,!canary",
            "--pod-name",
            "db-0",
            "--events",
            "link,address",
            "--webhook",
            "https://hook.example/x",
        ]);
        assert_eq!(
            serde_json::to_value(&care).unwrap(),
            json!({
                "name": "mon",
                "spec": {
                    "selector": {"matchLabels": {"app": "web"},
                                 "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
                    "podNames": ["db-0"],
                    "events": ["link", "address"],
                    "delivery": {"mode": "webhook", "url": "https://hook.example/x"}
                }
            })
        );
        let stream = parse(&["nescli", "subscribe", "mon", "--pod-name", "web-0,web-1"]);
        assert_eq!(stream.spec.pod_names, ["web-0", "web-1"]);
        assert_eq!(stream.spec.delivery, Delivery::default());
    }

    #[test]
    fn a_bad_selector_or_event_kind_is_a_usage_error() {
        for args in [
            &["nescli", "subscribe", "mon", "--selector", "env in (a"][..],
            &["nescli", "subscribe", "mon", "--events", "links"][..],
        ] {
            let err = Cli::try_parse_args(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
