//! The `nescli` binary: parse the command line, start tracing, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::error::EXIT_UNREACHABLE);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::from(cli::error::EXIT_OK),
        Err(err) => {
            let code = err.exit_code();
            if code != cli::error::EXIT_OK {
                eprintln!("{}", err.report());
            }
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters (default `warn`), `NES_LOG_FORMAT=json` for JSON.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("NES_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
