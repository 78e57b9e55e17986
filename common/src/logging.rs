//! Logging for every nes binary: to stderr, filtered by `NES_LOG` (an `EnvFilter`
//! directive such as `info` or `agent=debug`; `warn` when unset, so that a command run by
//! hand stays quiet; the manifests set `info` for the daemons), as JSON lines when
//! `NES_LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// The variable holding the filter.
pub const FILTER_VAR: &str = "NES_LOG";
/// The variable choosing the format (`json`, anything else is text).
pub const FORMAT_VAR: &str = "NES_LOG_FORMAT";

/// The filter when `NES_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "warn";

/// Installs the global subscriber.
pub fn init() {
    let filter =
        EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var(FORMAT_VAR).as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
