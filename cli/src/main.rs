//! The `nescli` binary: parse the command line, start tracing, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    common::logging::init();
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
