use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = agent::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("NES_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("NES_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    let code = match cli.run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nes-agent: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
