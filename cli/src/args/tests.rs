use super::*;
use pretty_assertions::assert_eq;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_args(std::iter::once("nescli").chain(args.iter().copied()))
}

fn configure(args: &[&str]) -> Result<NetworkConfigurationSpec, clap::Error> {
    let mut full = vec!["configure"];
    full.extend_from_slice(args);
    match parse(&full)?.command {
        Command::Configure(c) => Ok(c.fragment.unwrap_or_default()),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn interface_flags_follow_command_line_order_across_blocks() {
    let spec = configure(&[
        "--interface",
        "eth0",
        "--mtu",
        "9000",
        "--address",
        "10.0.0.5/24",
        "--interface",
        "eth0.100",
        "--type",
        "vlan",
        "--parent",
        "eth0",
        "--vlan-id",
        "100",
        "--address",
        "192.168.100.5/24",
        "--mtu",
        "1400",
        "--route",
        "10.20.0.0/16,via=192.168.100.1,dev=eth0.100",
    ])
    .map_err(|e| e.to_string());
    let spec = spec.unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(&spec).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "interfaces": [
                {"name": "eth0", "type": "existing", "mtu": 9000, "addresses": ["10.0.0.5/24"]},
                {"name": "eth0.100", "type": "vlan", "parent": "eth0", "vlanId": 100, "mtu": 1400,
                 "addresses": ["192.168.100.5/24"]}
            ],
            "routes": [{"dst": "10.20.0.0/16", "via": "192.168.100.1", "dev": "eth0.100", "metric": 0, "table": 254}]
        })
    );
}

#[test]
fn usage_mistakes_are_clap_errors_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["configure", "--address", "10.0.0.5/24"],
            "comes before any --interface",
        ),
        (
            &["configure"],
            "configure needs -f FILE, or --interface/--route flags",
        ),
        (
            &["configure", "-f", "x.yaml", "--interface", "eth0"],
            "cannot be used with",
        ),
        (
            &["configure", "--interface", "eth0", "--type", "vlna"],
            "unknown variant",
        ),
        (&["configure", "--route", "10.0.0.0/8"], "needs via=GATEWAY"),
        (&["status", "--pod", "web-0"], "--pod needs --socket"),
        (&["status", "--timeout", "soon"], "not a duration"),
        (&["wait"], "--for"),
        (
            &["unconfigure", "--manager", "my app"],
            "not a valid manager name",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, want) in cases {
        match parse(args) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}");
                let text = e.to_string();
                assert!(
                    text.contains(want),
                    "{args:?}: {text:?} does not mention {want:?}"
                );
            }
        }
    }
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cli = parse(&[
        "wait",
        "--for=applied",
        "--timeout",
        "5s",
        "--socket",
        "/run/nes.sock",
        "--pod",
        "web-0",
        "-o",
        "json",
    ]);
    let cli = cli.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.global.timeout, Duration::from_secs(5));
    assert_eq!(cli.global.pod.as_deref(), Some("web-0"));
    assert_eq!(cli.global.output, Format::Json);
    assert_eq!(cli.global.abstract_name, "nes");
}

#[test]
fn durations_accept_the_usual_units() {
    let cases = [
        ("500ms", Some(Duration::from_millis(500))),
        ("30s", Some(Duration::from_secs(30))),
        ("30", Some(Duration::from_secs(30))),
        ("1.5s", Some(Duration::from_millis(1500))),
        ("2m", Some(Duration::from_secs(120))),
        ("1h", Some(Duration::from_secs(3600))),
        ("1h 30m", Some(Duration::from_secs(5400))),
        // humantime's units: days were refused before it parsed durations
        ("2d", Some(Duration::from_secs(2 * 86400))),
        ("", None),
        ("5x", None),
        ("1.5.2s", None),
        ("-1s", None),
        ("s", None),
    ];
    for (input, want) in cases {
        assert_eq!(parse_duration(input).ok(), want, "{input:?}");
    }
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}
