use super::*;

fn list(name: &str, plugin: &str) -> ConfList {
    ConfList::parse(
        format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"{plugin}"}}]}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn want(reference: &str, ifname: &str, list: Result<ConfList, CniError>) -> Want {
    Want {
        spec: AttachmentSpec {
            name: reference.into(),
            interface: Some(ifname.into()),
            ..Default::default()
        },
        ifname: ifname.into(),
        network: format!("ns/{reference}"),
        list,
    }
}

fn rec(reference: &str, ifname: &str, l: &ConfList, seq: u128) -> CachedInfo {
    CachedInfo {
        kind: CACHE_KIND.into(),
        container_id: "s".into(),
        config: l.bytes.clone(),
        if_name: ifname.into(),
        network_name: l.name.clone(),
        netns: String::new(),
        cni_args: vec![],
        capability_args: Default::default(),
        result: None,
        managed_by: Some(MANAGED_BY.into()),
        nes_reference: Some(reference.into()),
        nes_seq: seq,
    }
}

#[test]
fn plan_adds_in_declared_order_and_checks_what_is_attached_unchanged() {
    let (a, b) = (list("a", "bridge"), list("b", "macvlan"));
    let wants = [want("a", "net1", Ok(a.clone())), want("b", "net2", Ok(b))];
    assert_eq!(plan(&wants, &[]), [Step::Add(0), Step::Add(1)]);
    assert_eq!(
        plan(&wants, &[rec("a", "net1", &a, 1)]),
        [Step::Check(0, 0), Step::Add(1)]
    );
}

#[test]
fn plan_removes_the_undeclared_newest_first_before_adding() {
    let (a, b, c) = (
        list("a", "bridge"),
        list("b", "bridge"),
        list("c", "bridge"),
    );
    let recorded = [rec("a", "net1", &a, 1), rec("b", "net2", &b, 2)];
    let wants = [want("c", "net3", Ok(c))];
    assert_eq!(
        plan(&wants, &recorded),
        [Step::Del(1), Step::Del(0), Step::Add(0)]
    );
}

#[test]
fn plan_replaces_an_interface_whose_network_changed() {
    let (a, b) = (list("a", "bridge"), list("b", "macvlan"));
    let recorded = [rec("a", "net1", &a, 1)];
    let wants = [want("b", "net1", Ok(b))];
    assert_eq!(plan(&wants, &recorded), [Step::Del(0), Step::Add(0)]);
    // The same name with edited content is a change too.
    let edited = ConfList::parse(
        br#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge","mtu":1400}]}"#,
    )
    .unwrap();
    assert_eq!(
        plan(&[want("a", "net1", Ok(edited))], &recorded),
        [Step::Del(0), Step::Add(0)]
    );
}

#[test]
fn plan_keeps_an_attachment_whose_network_is_briefly_unreadable() {
    let a = list("a", "bridge");
    let missing = Err(CniError::NoNetwork {
        name: "a".into(),
        dir: "/x".into(),
    });
    assert_eq!(
        plan(&[want("a", "net1", missing)], &[rec("a", "net1", &a, 1)]),
        []
    );
}
