use clap::Parser;

/// Worker threads of the daemon's runtime, whatever the node's core count.
const MAX_WORKERS: usize = 4;

fn main() {
    let cli = agent::cli::Cli::parse();
    common::logging::init();
    // A one-shot command runs on one thread: its netlink requests and their socket's task
    // then never wait for another thread to be scheduled. Daemons get a worker per core, at
    // most MAX_WORKERS: their work waits on sockets, and each worker costs a stack and, under
    // load, a malloc arena (measured with scripts/bench-node.sh: 32 workers instead of 2 cost
    // 6 MiB more with 110 pods configured and 16 MiB more under attack).
    let runtime = if cli.is_one_shot() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // TOKIO_WORKER_THREADS, when set, is tokio's to read and wins.
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            builder.worker_threads(cores.min(MAX_WORKERS));
        }
        builder.enable_all().build()
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
