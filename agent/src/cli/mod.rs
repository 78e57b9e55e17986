//! `nes-agent` command line. Each subcommand is a module with an `Args` struct and a `run`;
//! adding one is one variant in [`Command`] plus its module.

use clap::{Parser, Subcommand};

pub mod apply;
pub mod standalone;

/// nes node agent.
#[derive(Parser, Debug)]
#[command(name = "nes-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply a network configuration to one network namespace once, then exit.
    Apply(apply::Args),
    /// Serve every named network namespace of this host as a pod, on @nes inside it.
    Standalone(standalone::Args),
}

impl Cli {
    /// Whether the command does one thing and exits (no daemon).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.command, Command::Apply(_))
    }

    /// Runs the chosen subcommand; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self.command {
            Command::Apply(args) => apply::run(args).await,
            Command::Standalone(args) => standalone::run(args).await,
        }
    }
}
