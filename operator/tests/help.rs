//! `nes-operator --help` documents every flag of the integration contract.

use std::process::Command;

/// Each flag with a phrase of its documentation.
const FLAGS: &[(&str, &str)] = &[
    ("--namespace", "Namespace the operator runs in"),
    ("--pod-name", "holder identity"),
    ("--listen-addr", "HTTPS server"),
    ("--probe-addr", "/healthz, /readyz and /metrics"),
    ("--service-name", "serving certificate covers"),
    ("--webhook-config-name", "caBundle"),
    ("--tls-secret-name", "serving certificate"),
    ("--ca-configmap-name", "publishes its CA"),
    ("--shim-image", "nes-shim container"),
    ("--shim-image-pull-policy", "imagePullPolicy"),
    ("--agent-service-account", "X-Nes-Pod-Uid"),
    ("--lease-name", "Lease"),
];

#[test]
fn help_mentions_every_flag_with_its_description() {
    let out = Command::new(env!("CARGO_BIN_EXE_nes-operator"))
        .arg("--help")
        .output()
        .expect("run nes-operator --help");
    assert!(out.status.success(), "--help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    // clap wraps long descriptions: compare with whitespace collapsed.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for (flag, phrase) in FLAGS {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{flag} "))
                    || l.trim_start().starts_with(&format!("{flag}="))
                    || l.trim_start() == *flag),
            "--help has no line for {flag}:\n{help}"
        );
        assert!(
            flat.contains(phrase),
            "--help does not document {flag} ({phrase:?}):\n{help}"
        );
    }
}
