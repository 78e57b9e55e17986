//! nescli: the client applications run to declare, inspect and watch their pod's network.
//!
//! `main.rs` parses the command line ([`Cli::parse_args`]), starts tracing and calls [`run`];
//! each subcommand lives in [`commands`], the transport in [`client`], printing in [`output`],
//! and the `configure` flags become a fragment in [`fragment`].
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod args;
pub mod client;
pub mod commands;
pub mod error;
pub mod fragment;
pub mod output;
pub mod selector;

pub use args::{Cli, Command};
pub use error::{Error, Result};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = commands::Context::new(&cli.global)?;
    match cli.command {
        Command::Configure(args) => commands::configure::run(&ctx, *args).await,
        Command::Unconfigure(args) => commands::unconfigure::run(&ctx, args).await,
        Command::Attach(args) => commands::attach::attach(&ctx, args).await,
        Command::Detach(args) => commands::attach::detach(&ctx, args).await,
        Command::Get => commands::get::run(&ctx).await,
        Command::Status => commands::status::run(&ctx).await,
        Command::Watch(args) => commands::watch::run(&ctx, args).await,
        Command::Wait(args) => commands::wait::run(&ctx, args).await,
        Command::Subscribe(args) => commands::subscribe::run(&ctx, args).await,
        Command::Completions { shell } => commands::completions::run(shell),
    }
}
