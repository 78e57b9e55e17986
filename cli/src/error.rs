//! The one error type of nescli and the exit code each variant maps to.

use std::path::PathBuf;
use std::time::Duration;

use api::wire::ProblemDetails;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The server rejected the request (its problem details are printed).
pub const EXIT_REJECTED: u8 = 1;
/// Bad invocation: unknown flag, bad value, unreadable or unparsable `-f` file.
pub const EXIT_USAGE: u8 = 2;
/// The server is unreachable, untrusted, timed out, or did not answer like the nes API.
pub const EXIT_UNREACHABLE: u8 = 3;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad invocation clap could not catch.
    #[error("{0}")]
    Usage(String),

    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    ParseFile { path: PathBuf, message: String },

    /// The server answered with a problem (4xx, or a 5xx other than 503).
    #[error("{}", problem_headline(.0))]
    Rejected(Box<ProblemDetails>),

    /// Connecting kept failing until the deadline (or failed in a way retrying cannot fix).
    #[error("cannot reach the nes agent at {endpoint}: {source}{}", waited_for(*.waited))]
    Unreachable {
        endpoint: String,
        waited: Duration,
        source: std::io::Error,
    },

    /// The server is up but did not finish in time (or kept answering 503).
    #[error("timed out after {}: {what}", humanize(*.after))]
    Timeout { what: String, after: Duration },

    /// The pass for the awaited generation ran and did not apply it (`wait`).
    #[error("the configuration was not applied: {0}")]
    NotApplied(String),

    /// SO_PEERCRED says the socket's owner is not root.
    #[error(
        "refusing the server at {endpoint}: it runs as uid {uid}, not root (uid 0); the nes \
         agent runs as root, so something else holds this socket"
    )]
    UntrustedServer { endpoint: String, uid: u32 },

    /// The TLS handshake with the cliserver failed (e.g. its certificate is not trusted).
    #[error("TLS handshake with {endpoint} failed: {source}{}", tls_hint(.source))]
    Tls {
        endpoint: String,
        source: std::io::Error,
    },

    /// The HTTP exchange broke (and retrying did not help before the deadline).
    #[error("talking to the nes agent at {endpoint}: {source}")]
    Http {
        endpoint: String,
        source: hyper::Error,
    },

    /// The server answered something that is not the nes API.
    #[error("unexpected answer from {endpoint}: {message}")]
    BadResponse { endpoint: String, message: String },

    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The process exit code for this error (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::ReadFile { .. } | Error::ParseFile { .. } => EXIT_USAGE,
            Error::Rejected(_) | Error::NotApplied(_) => EXIT_REJECTED,
            Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::UntrustedServer { .. }
            | Error::Tls { .. }
            | Error::Http { .. }
            | Error::BadResponse { .. } => EXIT_UNREACHABLE,
            Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
            Error::Output(_) => EXIT_REJECTED,
        }
    }

    /// The full, possibly multi-line, message printed to stderr: `error: ...` and, for a
    /// problem, one indented `field: message` line per field error.
    pub fn report(&self) -> String {
        let mut out = format!("error: {self}");
        if let Error::Rejected(problem) = self {
            for e in &problem.errors {
                // A conflict's message already starts with its field.
                if e.message.starts_with(&e.field) {
                    out.push_str(&format!("\n  {}", e.message));
                } else {
                    out.push_str(&format!("\n  {}: {}", e.field, e.message));
                }
            }
            if let Some(oldest) = problem.oldest_sequence {
                out.push_str(&format!(
                    "\n  the oldest buffered event is {oldest}; resume with --since {}",
                    oldest.saturating_sub(1)
                ));
            }
        }
        out
    }
}

fn problem_headline(p: &ProblemDetails) -> String {
    match p.detail.as_deref() {
        // The validator's detail already starts with the title: say it once.
        Some(detail) if detail.starts_with(p.title.as_str()) => detail.to_string(),
        Some(detail) if !detail.is_empty() => format!("{}: {detail}", p.title),
        _ => format!("{} (HTTP {})", p.title, p.status),
    }
}

/// What to do about a certificate rustls did not accept.
fn tls_hint(source: &std::io::Error) -> &'static str {
    let rejected_certificate = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if rejected_certificate {
        " (give the CA that signed the cliserver's certificate with --ca-file, e.g. ca.crt of \
         the nes-ca ConfigMap)"
    } else {
        ""
    }
}

fn waited_for(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(" (retried for {})", humanize(waited))
    }
}

/// `1.5s`, `30s`, `250ms`: short and readable.
pub fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Problem;

    #[test]
    fn a_rejection_reports_title_detail_and_every_field() {
        let mut p = ProblemDetails::new(422, "invalid network configuration", "2 problems");
        p.errors = vec![
            Problem {
                field: "spec.interfaces[0].vlanId".into(),
                message: "VLAN id must be 1-4094, got 0".into(),
            },
            Problem {
                field: "spec.routes[0].via".into(),
                message: "\"x\" is not an IP address".into(),
            },
        ];
        let err = Error::Rejected(Box::new(p));
        assert_eq!(err.exit_code(), EXIT_REJECTED);
        assert_eq!(
            err.report(),
            "error: invalid network configuration: 2 problems\n  \
             spec.interfaces[0].vlanId: VLAN id must be 1-4094, got 0\n  \
             spec.routes[0].via: \"x\" is not an IP address"
        );
    }

    #[test]
    fn the_validators_detail_is_not_prefixed_with_the_title_it_already_starts_with() {
        let invalid = api::validate::Invalid(vec![Problem {
            field: "spec.interfaces[0].vlanId".into(),
            message: "vlanId is only for type vlan, not existing".into(),
        }]);
        let report = Error::Rejected(Box::new(ProblemDetails::invalid(&invalid))).report();
        assert_eq!(
            report.lines().next(),
            Some(
                "error: invalid network configuration: spec.interfaces[0].vlanId: \
                 vlanId is only for type vlan, not existing"
            ),
            "{report}"
        );
    }

    #[test]
    fn a_field_message_that_names_its_field_is_not_prefixed_twice() {
        let conflict = api::merge::Conflict {
            field: "spec.interfaces[name=br0].mtu".into(),
            owner: "app".into(),
            theirs: "9000".into(),
            ours: "1400".into(),
        };
        let err = Error::Rejected(Box::new(ProblemDetails::conflict(&conflict)));
        let report = err.report();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 2, "{report}");
        assert_eq!(
            lines[1],
            "  spec.interfaces[name=br0].mtu is owned by manager \"app\" with a different value (9000, not 1400)"
        );
    }

    #[test]
    fn exit_codes_follow_the_documented_classes() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: Vec<(Error, u8)> = vec![
            (Error::Usage("x".into()), EXIT_USAGE),
            (
                Error::ParseFile {
                    path: "f".into(),
                    message: "m".into(),
                },
                EXIT_USAGE,
            ),
            (
                Error::Unreachable {
                    endpoint: "@nes".into(),
                    waited: Duration::from_secs(1),
                    source: io(),
                },
                EXIT_UNREACHABLE,
            ),
            (
                Error::UntrustedServer {
                    endpoint: "@nes".into(),
                    uid: 1000,
                },
                EXIT_UNREACHABLE,
            ),
            (
                Error::Timeout {
                    what: "w".into(),
                    after: Duration::from_secs(1),
                },
                EXIT_UNREACHABLE,
            ),
            (
                Error::Output(std::io::ErrorKind::BrokenPipe.into()),
                EXIT_OK,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }

    #[test]
    fn an_untrusted_certificate_says_to_give_the_ca() {
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let err = Error::Tls {
            endpoint: "https://nes".into(),
            source: untrusted,
        };
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        assert!(err.to_string().contains("--ca-file"), "{err}");
        let other = Error::Tls {
            endpoint: "https://nes".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert!(!other.to_string().contains("--ca-file"), "{other}");
    }

    #[test]
    fn durations_print_short() {
        for (d, s) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1.5s"),
        ] {
            assert_eq!(humanize(d), s);
        }
    }
}
