//! Root tests: a pod can never touch the node. Each attack runs in real namespaces against
//! a real "host" link nes did not create (in a fresh namespace standing in for the host),
//! and checks that link is unchanged byte for byte and the request is refused clearly.

mod common;

use agent::owned::Owned;
use common::{require_kind, require_root, spec, Netns, PodFixture};

/// A host link nes did not create, with every setting an attack could change.
struct Victim {
    name: &'static str,
    bridge: &'static str,
}

impl Victim {
    /// `victim0` (a veth, peer `victim1`), MTU 1400, alias, address, in bridge `victimbr`'s
    /// absence; `victimbr` a bridge of its own; both up.
    fn plant(host: &Netns) -> Self {
        host.ip(&[
            "link", "add", "victim0", "type", "veth", "peer", "name", "victim1",
        ]);
        host.ip(&["link", "add", "victimbr", "type", "bridge"]);
        host.ip(&[
            "link",
            "set",
            "victim0",
            "mtu",
            "1400",
            "alias",
            "host-owned",
        ]);
        host.ip(&["addr", "add", "192.0.2.1/24", "dev", "victim0"]);
        host.ip(&["link", "set", "victim0", "up"]);
        host.ip(&["link", "set", "victimbr", "up"]);
        Self {
            name: "victim0",
            bridge: "victimbr",
        }
    }

    /// Everything the kernel says about the victim: link (master, state, MTU, alias) and
    /// addresses.
    fn snapshot(&self, host: &Netns) -> String {
        // The bridge without `-d`: its details include running timers.
        format!(
            "{}\n{}\n{}\n{}",
            host.ip(&["-d", "link", "show", "dev", self.name]),
            host.ip(&["addr", "show", "dev", self.name]),
            host.ip(&["link", "show", "dev", self.bridge]),
            host.ip(&["link", "show", "master", self.bridge]),
        )
    }
}

#[tokio::test]
async fn a_veth_peer_named_like_a_host_link_leaves_that_link_alone() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let fx = PodFixture::new("hbveth");
    let victim = Victim::plant(&fx.host);
    let before = victim.snapshot(&fx.host);
    let net = fx.open().await;
    let attack = spec(
        "interfaces:\n  - name: v0\n    type: veth\n    peer: victim0\n    peerBridge: victimbr\n    addresses: [\"10.9.0.2/24\"]\n",
    );
    let mut owned = Owned::default();
    for _ in 0..3 {
        let report = net.converge(&attack, &owned).await.expect("converge");
        owned = report.owned.clone();
        assert!(!report.is_converged(), "the attack is refused: {report:#?}");
        let text = format!("{:?} {:?}", report.blocked, report.results);
        assert!(
            !text.contains("victim"),
            "status names only the pod's own objects: {text}"
        );
    }
    assert_eq!(victim.snapshot(&fx.host), before, "the host link changed");
    assert!(!fx.pod.has_link("v0"), "nothing was created in the pod");
}
