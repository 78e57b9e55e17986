//! `nescli completions SHELL`: print a completion script.

use clap::CommandFactory;

use crate::args::Cli;
use crate::error::{Error, Result};

pub fn run(shell: clap_complete::Shell) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nescli", &mut out);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out).map_err(Error::Output)
}
