//! `gauntlet init [FILE] [--from TEMPLATE]`: writes a commented starter plan, one of the
//! example plans (compiled into the binary, so it matches this version), that validates and
//! runs against `gauntlet testbed` as written. Its first line is a `#:schema` directive for
//! TOML language servers, with a comment saying how to write the schema it names.

use std::path::PathBuf;

use crate::usage::UsageError;

/// The starter plans: name, what it shows, text.
const TEMPLATES: [(&str, &str, &str); 6] = [
    (
        "agent-pipeline",
        "start an agent, check its five events' order, duplicates, isolation; per-event latency",
        include_str!("../../plans/agent-pipeline.toml"),
    ),
    (
        "connect-ping",
        "authenticated connect, confirmation, JSON ping/pong and a protocol ping",
        include_str!("../../plans/connect-ping.toml"),
    ),
    (
        "http",
        "HTTP endpoints: status codes and JSON bodies (no WebSocket)",
        include_str!("../../plans/health.toml"),
    ),
    (
        "message-flow",
        "send user messages and check the replies",
        include_str!("../../plans/message-flow.toml"),
    ),
    (
        "concurrent",
        "several simultaneous connections of one user",
        include_str!("../../plans/concurrent-7.toml"),
    ),
    (
        "staging-suite",
        "a weighted mix of the above with thresholds",
        include_str!("../../plans/staging-suite.toml"),
    ),
];

/// The lines above every starter: the schema directive of taplo (and Even Better TOML, which
/// runs it), a header that only comments may precede, and how to get the file it names.
const SCHEMA_HEADER: &str = "\
#:schema ./plan.schema.json
# The line above gives editors (taplo, VS Code's Even Better TOML) the plan's schema: write it
# next to this plan with `gauntlet schema plan > plan.schema.json` (every field: docs/plans.md).
";

/// `gauntlet init` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan file to write (its folders are created); `-` writes it on stdout.
    #[arg(default_value = "plan.toml")]
    file: PathBuf,
    /// The starter (`--list` says what each shows).
    #[arg(long, default_value = "agent-pipeline", value_parser = StarterName)]
    from: String,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// List the starters and exit.
    #[arg(long)]
    list: bool,
}

/// A starter's name: the starters are its possible values (so shells complete them), and
/// any other name is refused naming the known ones.
#[derive(Debug, Clone, Copy)]
struct StarterName;

impl clap::builder::TypedValueParser for StarterName {
    type Value = String;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let value = value.to_string_lossy();
        if TEMPLATES.iter().any(|(n, _, _)| *n == value) {
            return Ok(value.into_owned());
        }
        let names: Vec<&str> = TEMPLATES.iter().map(|(n, _, _)| *n).collect();
        Err(clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!(
                "--from {value}: no such starter (known: {})\n",
                names.join(", ")
            ),
        ))
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(TEMPLATES.iter().map(|(name, what, _)| {
            clap::builder::PossibleValue::new(*name).help(*what)
        })))
    }
}

/// Writes the starter plan.
pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.list {
        for (name, what, _) in TEMPLATES {
            outln!("{name:<16} {what}");
        }
        return Ok(0);
    }
    let Some((_, _, text)) = TEMPLATES.iter().find(|(n, _, _)| *n == args.from) else {
        // The value parser let only starters through.
        return Err(UsageError(format!("--from {}: no such starter", args.from)).into());
    };
    let text = format!("{SCHEMA_HEADER}{text}");
    if args.file.as_os_str() == "-" {
        out!("{text}");
        return Ok(0);
    }
    if args.file.exists() && !args.force {
        return Err(UsageError(format!(
            "{} exists: choose another FILE or add --force to replace it",
            args.file.display()
        ))
        .into());
    }
    write(&args.file, &text)?;
    let file = args.file.display();
    outln!("wrote {file} (starter `{}`)", args.from);
    outln!("try it against the testbed:");
    outln!("  export JWT_SECRET_KEY=change-me");
    outln!("  gauntlet testbed &");
    outln!("  gauntlet validate {file}");
    outln!("  gauntlet run {file}");
    outln!("then point it at your service with --target URL; every field: docs/plans.md");
    outln!(
        "editor completion and checks: gauntlet schema plan > {}",
        args.file.with_file_name("plan.schema.json").display()
    );
    Ok(0)
}

/// Writes `text` into `file`, creating its folders; a file that cannot be written is a
/// usage error naming it (exit 2).
fn write(file: &std::path::Path, text: &str) -> Result<(), UsageError> {
    let cannot = |e: std::io::Error| UsageError(format!("cannot write {}: {e}", file.display()));
    if let Some(folder) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| {
            UsageError(format!(
                "cannot create the folder {} for {}: {e}",
                folder.display(),
                file.display()
            ))
        })?;
    }
    std::fs::write(file, text).map_err(cannot)
}
