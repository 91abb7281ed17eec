//! `gauntlet schema [plan|report|compare]`: the JSON Schema of a plan file, of report.json or
//! of `compare --json`, generated from the types (what `docs/*.schema.json` hold), so that a
//! user with only the binary can give an editor the plan's schema.

/// `gauntlet schema` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which schema: a plan file (for the editor: `#:schema ./plan.schema.json`), report.json,
    /// or the output of `gauntlet compare --json`.
    #[arg(value_enum, default_value_t = Which::Plan)]
    which: Which,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Which {
    Plan,
    Report,
    Compare,
}

/// Prints the schema on stdout.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let schema = match args.which {
        Which::Plan => gauntlet_core::plan::json_schema(),
        Which::Report => gauntlet_core::report::json_schema(),
        Which::Compare => gauntlet_core::compare::json_schema(),
    };
    out!("{schema}");
    Ok(0)
}
