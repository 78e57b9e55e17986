use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = operator::args::Args::parse();
    common::logging::init();
    // One process-wide crypto provider for kube's client and the HTTPS server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match operator::run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "nes-operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
