//! Status pieces for `NetworkConfigurationStatus`, computed purely from the desired spec,
//! the observed kernel state and the last apply report.

use api::host::HostAccess;
use api::{InterfaceStatus, NetworkConfigurationSpec, ObjectState, RouteStatus};

use crate::apply::ApplyReport;
use crate::observe::Observed;
use crate::owned::Owned;
use crate::plan::{pending, ObjectRef};

/// Live status of every declared interface and route.
///
/// An object is `Applied` when the kernel matches the spec (planning again from `observed`
/// yields no write for it), `Failed` when it is blocked for a reason a person must fix or
/// its last write failed, `Pending` otherwise.
pub fn status(
    desired: &NetworkConfigurationSpec,
    observed: &Observed,
    last: Option<&ApplyReport>,
    access: &HostAccess,
) -> (Vec<InterfaceStatus>, Vec<RouteStatus>) {
    let none = Owned::default();
    let owned = last.map_or(&none, |r| &r.owned);
    let remaining = pending(desired, observed, owned, access);
    let state_of = |related: &dyn Fn(&ObjectRef) -> bool| -> (ObjectState, Option<String>) {
        if let Some(b) = remaining.blocked.iter().find(|b| related(&b.object)) {
            return (b.state, Some(b.reason.clone()));
        }
        // The last pass saw the host too (this reading may not have): what it refused stands.
        let refused = last.and_then(|r| {
            r.blocked
                .iter()
                .find(|b| b.state == ObjectState::Failed && related(&b.object))
        });
        if let Some(b) = refused {
            return (b.state, Some(b.reason.clone()));
        }
        if remaining.ops.iter().any(|o| related(&o.object())) {
            let err = last.and_then(|r| {
                r.results.iter().rev().find_map(|res| match &res.outcome {
                    crate::apply::Outcome::Failed { message, .. } if related(&res.op.object()) => {
                        Some(message.clone())
                    }
                    _ => None,
                })
            });
            return match err {
                Some(e) => (ObjectState::Failed, Some(e)),
                None => (ObjectState::Pending, None),
            };
        }
        (ObjectState::Applied, None)
    };

    let interfaces = desired
        .interfaces
        .iter()
        .map(|i| {
            let (state, error) = state_of(&|o| o.interface() == Some(i.name.as_str()));
            let live = observed.link(&i.name);
            InterfaceStatus {
                name: i.name.clone(),
                state,
                error,
                index: live.map(|l| l.index),
                mac: live.and_then(|l| l.mac.clone()),
                mtu: live.map(|l| l.mtu),
                oper_state: live.map(|l| l.oper_state.clone()),
                // Sorted (IPv4 first): the kernel's dump and the event-fed mirror list them in
                // different orders, and an unchanged status must read the same either way.
                addresses: live
                    .map(|l| {
                        let mut a: Vec<_> = observed.addresses_of(l.index).collect();
                        a.sort();
                        a.iter().map(|a| a.to_string()).collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let routes = desired
        .routes
        .iter()
        .map(|r| {
            // Made only when something is left to match it against: a converged pod may
            // declare a thousand routes, and its status is read after every pass.
            let obj = std::cell::OnceCell::new();
            let (state, error) = state_of(&|o| o == obj.get_or_init(|| ObjectRef::Route(r.key())));
            RouteStatus {
                dst: r.dst.clone(),
                table: r.table,
                metric: r.metric,
                state,
                error,
            }
        })
        .collect();
    (interfaces, routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ObservedAddress, ObservedLink};
    use api::InterfaceSpec;

    #[test]
    fn status_reports_applied_pending_and_live_link_state() {
        let desired = NetworkConfigurationSpec {
            interfaces: vec![
                InterfaceSpec {
                    name: "eth0".into(),
                    addresses: vec!["10.0.0.5/24".into()],
                    ..Default::default()
                },
                InterfaceSpec {
                    name: "net1".into(),
                    ..Default::default()
                },
            ],
            routes: vec![],
            ..Default::default()
        };
        let observed = Observed {
            links: vec![ObservedLink {
                index: 2,
                name: "eth0".into(),
                mtu: 1500,
                oper_state: "up".into(),
                mac: Some("02:00:00:00:00:01".into()),
                ..Default::default()
            }],
            addresses: vec![ObservedAddress {
                index: 2,
                addr: "10.0.0.5/24".parse().unwrap(),
            }],
            ..Default::default()
        };
        let (ifs, _) = status(&desired, &observed, None, &HostAccess::deny_all());
        assert_eq!(ifs[0].state, ObjectState::Applied);
        assert_eq!(ifs[0].addresses, vec!["10.0.0.5/24".to_string()]);
        assert_eq!(ifs[0].index, Some(2));
        assert_eq!(ifs[1].state, ObjectState::Pending);
        assert!(ifs[1]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist"));
    }
}
