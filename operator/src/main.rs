use clap::Parser;
use tracing_subscriber::{fmt, EnvFilter};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = operator::args::Args::parse();
    let filter = EnvFilter::try_from_env("NES_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("NES_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt().json().with_env_filter(filter).init();
    } else {
        fmt().with_env_filter(filter).init();
    }
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
