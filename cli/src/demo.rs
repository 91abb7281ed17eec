//! `gauntlet demo`: starts the embedded testbed with a few faults switched on, a coordinator
//! and two workers in this process, runs the agent-pipeline example plan over gRPC, prints the
//! summary, the testbed's ground truth next to gauntlet's failure counts, and the report's path.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use gauntlet_testbed::config::Secret;
use gauntlet_testbed::faults::Faults;
use gauntlet_testbed::{Testbed, TestbedConfig};

use gauntlet_client::{Fleet, Submission};
use gauntlet_core::report::files;

/// The plan the demo runs (the file in `plans/`, compiled in).
const PLAN: &str = include_str!("../../plans/agent-pipeline.toml");

/// Faults switched on, and the category gauntlet must report for each.
const FAULTS: [(&str, &str); 4] = [
    ("factory_init", "factory_init_failed"),
    ("missing_event", "missing_event"),
    ("duplicate_event", "duplicate_event"),
    ("isolation_breach", "isolation_breach"),
];

/// `gauntlet demo` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Virtual users (each its own JWT subject, two agent runs each).
    #[arg(long, default_value_t = 50)]
    users: u32,
    /// Keep the testbed running after the demo until Ctrl-C, to explore it by hand.
    #[arg(long)]
    serve: bool,
    /// Directory for report.json (default: a directory under the system's temp dir).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Runs the demo.
pub async fn run(args: Args, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<u8> {
    if args.users == 0 {
        return Err(crate::usage::UsageError("--users must be at least 1".into()).into());
    }
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let secret = format!("demo-{nonce}");
    let secret_file = std::env::temp_dir().join(format!(
        "gauntlet-demo-{}-{nonce}.secret",
        std::process::id()
    ));
    std::fs::write(&secret_file, &secret).context("cannot write the demo's JWT secret file")?;
    let result = demo(&args, &secret, &secret_file, &shutdown).await;
    let _ = std::fs::remove_file(&secret_file);
    result
}

async fn demo(
    args: &Args,
    secret: &str,
    secret_file: &std::path::Path,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<u8> {
    let mut config = TestbedConfig {
        seed: 1,
        ..TestbedConfig::default()
    };
    config.auth.secret = Some(Secret(secret.as_bytes().to_vec()));
    // Each fault hits its own quarter of the users (by subject number modulo 4), so no session
    // meets two faults and every injected fault is some session's primary failure.
    let faults: serde_json::Map<String, serde_json::Value> = FAULTS
        .iter()
        .enumerate()
        .map(|(i, (knob, _))| {
            let fault =
                serde_json::json!({ "rate": 0.2, "users": { "suffix_mod": 4, "suffix_rem": [i] } });
            ((*knob).to_owned(), fault)
        })
        .collect();
    config.faults = serde_json::from_value::<Faults>(faults.into()).context("demo faults")?;
    let testbed = Testbed::start(config, "127.0.0.1:0".parse()?)
        .await
        .context("cannot start the embedded testbed")?;
    outln!(
        "testbed: {} (faults, each at 20 % on its own quarter of the users: {})",
        testbed.ws_url(),
        FAULTS.map(|(k, _)| k).join(", ")
    );

    // The example plan, with the demo's secret file and size.
    let mut plan: toml::Table = PLAN.parse().context("the embedded plan")?;
    if let Some(toml::Value::Table(auth)) = plan.get_mut("auth") {
        auth.remove("secret_env");
        auth.insert(
            "secret_file".into(),
            secret_file.display().to_string().into(),
        );
    }
    if let Some(toml::Value::Table(load)) = plan.get_mut("load") {
        load.insert("vus".into(), i64::from(args.users).into());
        load.insert("iterations".into(), 2.into());
    }
    outln!(
        "plan: agent-pipeline, {} VUs x 2 agent runs on a coordinator with 2 workers (gRPC on loopback); checks: event order, duplicates, missing events, user and thread isolation\n",
        args.users
    );
    let submission = Submission {
        plan_toml: toml::to_string(&plan).context("the demo plan")?,
        plan_file: "plans/agent-pipeline.toml".into(),
        target: Some(testbed.http_url()),
        ws_target: None,
        min_workers: 2,
        token: None,
        tls_ca: None,
        load: Default::default(),
        vars: Default::default(),
    };
    let report = crate::run::follow(Fleet::InProcess(2), submission, shutdown, true, None).await?;
    let dir = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("gauntlet-demo")
            .join(&report.run_id)
    });
    let path = files::write(&dir, &report, None)?;
    out!("{}", report.render_text());
    outln!("(the injected faults make the plan's threshold fail, as they should)");

    let truth = testbed.stats();
    let by_category: BTreeMap<String, u64> = report
        .failures_by_category()
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect();
    outln!("\ngauntlet's failure counts next to the testbed's ground truth:");
    outln!("  {:<20} {:>9} {:>9}", "fault", "injected", "gauntlet");
    let mut all_equal = true;
    for (knob, category) in FAULTS {
        let injected = truth.faults.get(knob).copied().unwrap_or(0);
        let seen = by_category.get(category).copied().unwrap_or(0);
        all_equal &= injected == seen;
        let mark = if injected == seen { "=" } else { "!=" };
        outln!("  {knob:<20} {injected:>9} {seen:>9}  {mark} {category}");
    }
    if report.totals.passed == 0 {
        bail!("no session passed: the demo ran nothing useful");
    }
    let verdict_ok = all_equal;
    outln!("\nreport: {}", path.display());
    outln!(
        "\n{}",
        if all_equal {
            "demo ok: every injected fault was found and classified"
        } else {
            "demo: gauntlet's counts differ from the ground truth"
        }
    );
    if args.serve {
        outln!("\nserving {} until Ctrl-C", testbed.http_url());
        shutdown.cancelled().await;
    }
    testbed.stop().await?;
    Ok(if verdict_ok { 0 } else { crate::exit::FAILED })
}
