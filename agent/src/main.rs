use clap::Parser;

fn main() {
    let cli = agent::cli::Cli::parse();
    common::logging::init();
    // A one-shot command runs on one thread: its netlink requests and their socket's task
    // then never wait for another thread to be scheduled. Daemons get a worker per core.
    let runtime = if cli.is_one_shot() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(cli.run()),
        Err(error) => Err(anyhow::Error::new(error).context("starting the async runtime")),
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nes-agent: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
