//! The `nescli` binary: parse the command line, start tracing, run, map errors to exit codes.
#![forbid(unsafe_code)]

fn main() {
    let args = cli::Cli::parse_args();
    common::logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(cli::error::EXIT_UNREACHABLE.into());
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(()) => cli::error::EXIT_OK,
        Err(err) => {
            let code = err.exit_code();
            if code != cli::error::EXIT_OK {
                eprintln!("{}", err.report());
            }
            code
        }
    };
    // Exits with the runtime still standing (`exit` flushes stdout): tearing down its
    // driver and connection is work the kernel does anyway, and costs a one-address
    // `configure --wait` a tenth of its time.
    std::process::exit(code.into())
}
