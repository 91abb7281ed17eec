//! `gauntlet completions SHELL` and `gauntlet man`: shell completion scripts (clap_complete)
//! and a roff man page (clap_mangen), both generated from the command line's own definition,
//! so they never drift from `--help`.

use clap::CommandFactory as _;

/// `gauntlet completions` flags.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, powershell or elvish.
    shell: clap_complete::Shell,
}

/// Prints the completion script for a shell on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut command = crate::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "gauntlet", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}

/// Prints the man page (roff) on stdout: `gauntlet man > gauntlet.1`.
pub fn man() -> anyhow::Result<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::Cli::command()).render(&mut out)?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
