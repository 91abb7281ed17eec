//! `gauntlet completions SHELL` and `gauntlet man [COMMAND]`: shell completion scripts
//! (clap_complete) and roff man pages (clap_mangen), gauntlet's and each command's, generated from the command line's own definition,
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

/// `gauntlet man` flags.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// A command whose page to print (`gauntlet-run(1)` is `gauntlet man run`); without it,
    /// gauntlet's page, which lists them.
    command: Option<String>,
}

/// Prints a man page (roff) on stdout: `gauntlet man > gauntlet.1`, `gauntlet man run >
/// gauntlet-run.1`.
pub fn man(args: ManArgs) -> anyhow::Result<u8> {
    let mut gauntlet = crate::Cli::command();
    // Built, every command knows its page's name (`gauntlet-run`) and how it is called.
    gauntlet.build();
    let page = match &args.command {
        None => gauntlet,
        Some(name) => match gauntlet.find_subcommand(name) {
            Some(command) => command.clone(),
            None => {
                let known: Vec<&str> = gauntlet.get_subcommands().map(|c| c.get_name()).collect();
                return Err(crate::usage::UsageError(format!(
                    "gauntlet man {name}: no such command (known: {})",
                    known.join(", ")
                ))
                .into());
            }
        },
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("gauntlet {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
