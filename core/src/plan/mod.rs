//! The plan: what a run does (target, auth, load model, scenarios and their steps, isolation
//! checks, classifiers, thresholds, fleet settings). Read from TOML once, at the edge
//! ([`Plan::from_text`]: the file's shapes in [`spec`], checked by `validate` with every
//! problem located at `file:line:col: field`), it resolves into the typed [`Plan`] that the
//! coordinator and workers use and that travels to workers as it is. `docs/plans.md`
//! documents each field; keep the two in step.
//!
//! # Layout
//! - this file: [`Plan`], [`Scenario`], [`Fleet`], loading and overrides;
//! - [`target`]: where the load goes; [`auth`]: JWT minting; [`load`]: the load models;
//! - [`step`]: the steps, one type per kind; [`check`]: isolation checks, matchers,
//!   classifiers;
//! - [`spec`]: the TOML shapes and their resolution; `validate`: every problem, located.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_file::{ConfigError, Located, locate_path, parse};

pub mod auth;
pub mod check;
pub mod load;
pub mod spec;
pub mod step;
pub mod target;
mod validate;

pub use auth::{Algorithm, Auth, AuthSpec, KeySource, Placement, TokenPer};
pub use check::{
    Classifier, ClassifierSpec, Condition, IsolationCheck, MatchTest, Matcher, MatcherSpec,
};
pub use load::{
    Closed, Load, LoadOverride, LoadSpec, MAX_RATE, MAX_VUS, Model, Open, Pause, RateSchedule,
    Stage, VuSchedule, parse_stage,
};
pub use spec::{PlanSpec, ScenarioSpec, StepSpec};
pub use step::{
    ConnectOutcome, ExpectRejection, Expected, Http, Payload, Repeat, Sleep, Step, WsClose,
    WsConnect, WsExpect, WsExpectSequence, WsPing, WsSend,
};
pub use target::{MAX_URLS, Target, Tls, Urls};

/// A whole plan, validated and resolved.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Plan {
    /// Short name; runs of the same plan are compared by it.
    pub name: String,
    /// What the plan is for.
    pub description: String,
    /// Where to send the load (with the command line's overrides applied).
    pub target: Target,
    /// JWT minting; no `[auth]` sends no token.
    pub auth: Option<Auth>,
    /// How many sessions, how fast.
    pub load: Load,
    /// What a session does.
    pub scenarios: Vec<Scenario>,
    /// Fields of received frames that must belong to this VU.
    pub isolation: Vec<IsolationCheck>,
    /// Plan-specific failure categories, tried before the built-in ones.
    pub classifiers: Vec<Classifier>,
    /// Pass/fail rules judged by the coordinator; none means "no session may fail".
    pub thresholds: Vec<crate::thresholds::Threshold>,
    /// How the fleet runs this plan.
    pub fleet: Fleet,
    /// What the command line replaced for this run (`--vus 20`, `--target ...`), as flags.
    #[serde(default)]
    pub overrides: Vec<String>,
}

/// A named, weighted sequence of steps.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Scenario {
    /// Name (unique in the plan; used in metric names).
    pub name: String,
    /// Relative share of sessions.
    pub weight: u32,
    /// Variables rendered at session start (`thread = "t-{vu}-{iteration}"`), usable as
    /// `{thread}` in later templates.
    pub vars: BTreeMap<String, String>,
    /// What the session does, in order.
    pub steps: Vec<Step>,
}

/// Fleet settings of a plan (the command line can override them).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Wait for this many workers before starting.
    #[serde(default)]
    pub min_workers: Option<u32>,
    /// How long to wait for them.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub min_workers_timeout: Option<Duration>,
    /// What a lost worker's share becomes.
    #[serde(default)]
    pub on_worker_loss: WorkerLoss,
    /// Snapshot interval.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub interval: Option<Duration>,
    /// The smallest fraction of the planned load a run may deliver and still pass (default
    /// 1.0: a run that delivered less than asked, through lost workers, a cancel or an abort,
    /// is an error, never a pass).
    #[serde(default)]
    pub min_delivered: Option<f64>,
    /// How many sessions of unknown outcome (running on a worker that was lost, so their
    /// result never arrived) a run may have and still pass (default 0).
    #[serde(default)]
    pub max_unknown: Option<u64>,
    /// Hard bound on the whole run from its start; past it the run is stopped with verdict
    /// error (default: the planned duration plus graceful stop plus 30 s, or 1 hour for a plan
    /// without a time bound such as iterations only).
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub deadline: Option<Duration>,
}

/// What happens to a lost worker's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLoss {
    /// The survivors take it over for the rest of the run.
    #[default]
    Reassign,
    /// The run goes on without it (the report shows the load delivered).
    Continue,
    /// The run stops with verdict error.
    Abort,
}

/// Values given on the command line that override the plan.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target`: replaces `target.base_url` (a comma-separated list for several); the
    /// WebSocket URL follows it.
    pub target: Option<String>,
    /// `--ws-target`: replaces the WebSocket URL on its own (comma-separated for several).
    pub ws_target: Option<String>,
    /// `--vus`, `--duration`, `--rate`, `--stage`...: replace the plan's `[load]`.
    pub load: LoadOverride,
    /// `--var NAME=VALUE`: replaces variable `NAME` in every scenario's `vars` that declares
    /// it (the value is a template, like the plan's own); a name no scenario declares is an
    /// error.
    pub vars: BTreeMap<String, String>,
}

/// Most `--var`s a run may have.
pub const MAX_VARS: usize = 64;

/// Checks one `--var NAME=VALUE` as typed: a name of letters, digits, `_` and `-`.
pub fn parse_var(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("`{text}`: write NAME=VALUE"));
    };
    let name = name.trim();
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits, `_`, `-`; at most 128)"
        ));
    }
    if value.len() > 4096 {
        return Err(format!(
            "the value of `{name}` is {} bytes, more than 4096",
            value.len()
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

impl Overrides {
    /// The flags a problem at `field` comes from, when the command line set that field (see
    /// [`LoadOverride::source_of`]; `switched`: the load flags changed the plan's model).
    pub fn source_of(&self, field: &str, switched: bool) -> Option<String> {
        if field.starts_with("load") {
            return self.load.source_of(field, switched);
        }
        if let Some(rest) = field.strip_prefix("target.") {
            let name = rest.split(['.', '[']).next().unwrap_or(rest);
            return match name {
                "base_url" => self
                    .target
                    .as_ref()
                    .map(|t| format!("--target {}", crate::redact::url(t))),
                "ws_url" => self
                    .ws_target
                    .as_ref()
                    .map(|t| format!("--ws-target {}", crate::redact::url(t)))
                    .or_else(|| {
                        self.target
                            .as_ref()
                            .map(|t| format!("--target {}", crate::redact::url(t)))
                    }),
                _ => None,
            };
        }
        // scenarios[i].vars.NAME...
        let (_, after) = field.split_once(".vars.")?;
        let name = after.split(['.', '[']).next().unwrap_or(after);
        let value = self.vars.get(name)?;
        Some(if crate::redact::is_secret_name(name) {
            format!("--var {name}=<redacted>")
        } else {
            format!("--var {name}={}", crate::redact::text(value))
        })
    }

    /// The overrides as command-line flags, for the report (`--target` URLs masked).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let masked = |t: &str| Urls::from_flag(t).map(crate::redact::url).to_string();
        if let Some(t) = &self.target {
            out.push(format!("--target {}", masked(t)));
        }
        if let Some(t) = &self.ws_target {
            out.push(format!("--ws-target {}", masked(t)));
        }
        out.extend(self.load.describe());
        for (name, value) in &self.vars {
            if crate::redact::is_secret_name(name) {
                out.push(format!("--var {name}=<redacted>"));
            } else {
                out.push(format!("--var {name}={}", crate::redact::text(value)));
            }
        }
        out
    }
}

/// A plan that failed to load: every problem found, each located.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Unreadable or syntactically / structurally wrong.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// Well-formed but wrong; one line per problem.
    #[error("{}", .0.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Located>),
}

impl Plan {
    /// Reads, parses, validates and resolves the plan at `path`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Plan::from_text(&path.display().to_string(), &text, overrides)
    }

    /// Parses, validates and resolves `text`, naming it `file` in errors.
    pub fn from_text(file: &str, text: &str, overrides: &Overrides) -> Result<Plan, PlanError> {
        let mut spec: PlanSpec = parse(file, text).map_err(ConfigError::from)?;
        if let Some(target) = &overrides.target {
            spec.target.base_url = Some(Urls::from_flag(target));
            spec.target.ws_url = None;
        }
        if let Some(ws) = &overrides.ws_target {
            spec.target.ws_url = Some(Urls::from_flag(ws));
        }
        if let Some(conflict) = overrides.load.conflict() {
            return Err(PlanError::Invalid(vec![Located {
                file: "the command line".into(),
                line: 0,
                col: 0,
                field: String::new(),
                message: conflict,
            }]));
        }
        let switched = overrides.load.switches(spec.load.model);
        overrides.load.apply(&mut spec.load);
        let mut unknown = Vec::new();
        if overrides.vars.len() > MAX_VARS {
            unknown.push(format!(
                "{} --var flags, more than the {MAX_VARS} a run may have",
                overrides.vars.len()
            ));
        }
        for (name, value) in &overrides.vars {
            let mut declared = false;
            for scenario in &mut spec.scenarios {
                if let Some(v) = scenario.vars.get_mut(name) {
                    *v = value.clone();
                    declared = true;
                }
            }
            if !declared {
                let known: std::collections::BTreeSet<&str> = spec
                    .scenarios
                    .iter()
                    .flat_map(|s| s.vars.keys().map(String::as_str))
                    .collect();
                unknown.push(format!(
                    "--var {name}: no scenario declares a variable `{name}` in its `vars` ({})",
                    if known.is_empty() {
                        "the plan declares none".to_owned()
                    } else {
                        format!(
                            "declared: {}",
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        )
                    }
                ));
            }
        }
        if !unknown.is_empty() {
            return Err(PlanError::Invalid(
                unknown
                    .into_iter()
                    .map(|msg| locate_path(file, text, "scenarios", msg))
                    .collect(),
            ));
        }
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(PlanError::Invalid(
                problems
                    .into_iter()
                    .map(|(path, msg)| match overrides.source_of(&path, switched) {
                        // A value the command line gave: blamed on the flags, not on the line
                        // of the file whose value they replaced.
                        Some(flags) => Located {
                            file: format!("{file}, as the command line set it ({flags})"),
                            line: 0,
                            col: 0,
                            field: path,
                            message: msg,
                        },
                        None => locate_path(file, text, &path, msg),
                    })
                    .collect(),
            ));
        }
        let mut plan = spec.resolve().ok_or_else(|| {
            PlanError::Invalid(vec![locate_path(
                file,
                text,
                "",
                "the plan passed validation but cannot be resolved (a bug: please report it)"
                    .into(),
            )])
        })?;
        plan.overrides = overrides.describe();
        Ok(plan)
    }

    /// The HTTP base URLs, in order (none when the plan names no target).
    pub fn base_urls(&self) -> &[String] {
        self.target.base_url.as_ref().map_or(&[], Urls::as_slice)
    }

    /// The WebSocket URLs, in order: `ws_url`'s entries, or each `base_url` with its scheme
    /// mapped and `ws_path`.
    pub fn ws_urls(&self) -> Vec<String> {
        if let Some(urls) = &self.target.ws_url {
            return urls.as_slice().to_vec();
        }
        self.base_urls()
            .iter()
            .filter_map(|base| {
                let (scheme, rest) = base.split_once("://")?;
                let scheme = match scheme {
                    "https" => "wss",
                    _ => "ws",
                };
                Some(format!(
                    "{scheme}://{}{}",
                    rest.trim_end_matches('/'),
                    self.target.ws_path
                ))
            })
            .collect()
    }

    /// The target instances: entry `i` pairs `base_url[i % b]` with the WebSocket URL
    /// `[i % w]`, for `max(b, w)` entries (validation allows only equal counts, or one of
    /// either). Session `i` (VU `i`, or arrival `i`) uses entry `i % n`, whatever the fleet.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let (base, ws) = (self.base_urls(), self.ws_urls());
        let n = base.len().max(ws.len());
        if base.is_empty() || ws.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|i| (base[i % base.len()].clone(), ws[i % ws.len()].clone()))
            .collect()
    }

    /// The closed model's largest VU count, or the open model's VU cap.
    pub fn max_vus(&self) -> u64 {
        self.load.max_vus()
    }
}

/// The JSON Schema of a plan file (`docs/plan.schema.json`), generated from [`PlanSpec`]: TOML
/// language servers (taplo, Even Better TOML) read it through a `#:schema` directive, so
/// fields complete and typos underline while typing.
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(PlanSpec);
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "gauntlet plan (docs/plans.md)".into());
    }
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Calls `f` on every string inside `value`.
pub fn each_string(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| each_string(v, f)),
        Value::Object(map) => map.values().for_each(|v| each_string(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `docs/plan.schema.json` is generated from the plan's types: this fails when they drift.
    /// Regenerate with `UPDATE_SCHEMA=1 cargo test -p gauntlet-core plan_schema`.
    #[test]
    fn plan_schema_doc_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/plan.schema.json");
        let generated = json_schema();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &generated).expect("write the schema");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/plan.schema.json is stale: run UPDATE_SCHEMA=1 cargo test -p gauntlet-core plan_schema"
        );
    }

    /// What an editor checks with the schema agrees with `validate`: every plan in plans/
    /// (as TOML, turned into JSON the way a TOML language server does) is valid, and a typo'd
    /// field, a step with two kinds and a duration written as a number are not.
    #[test]
    fn plan_schema_accepts_every_example_plan_and_flags_typos() {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        compiler.add_resource("plan.schema.json", schema).unwrap();
        let id = compiler.compile("plan.schema.json", &mut schemas).unwrap();
        let as_json = |text: &str| -> serde_json::Value {
            serde_json::to_value(toml::from_str::<toml::Value>(text).unwrap()).unwrap()
        };
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plans");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let v = as_json(&text);
                if let Err(e) = schemas.validate(&v, id) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 5, "{seen} plans");
        for (bad, what) in [
            (
                MINIMAL.replace("iterations = 1", "iteratons = 1"),
                "a typo'd field",
            ),
            (
                MINIMAL.replace("[load]", "[load]\ngraceful_stop = 5"),
                "a duration as a number",
            ),
            (
                MINIMAL.replace(
                    "steps = [",
                    "steps = [ { ws_send = { text = \"x\" }, ws_close = {} },",
                ),
                "a step with two kinds",
            ),
        ] {
            assert!(
                Plan::from_text("p.toml", &bad, &Overrides::default()).is_err(),
                "{what}: validate accepts it"
            );
            assert!(
                schemas.validate(&as_json(&bad), id).is_err(),
                "{what}: the schema accepts it"
            );
        }
        assert!(schemas.validate(&as_json(MINIMAL), id).is_ok());
    }

    const MINIMAL: &str = r#"
name = "t"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "s"
steps = [ { ws_connect = {} }, { ws_send = { json = { type = "ping" } } }, { ws_expect = { type = "pong" } } ]
"#;

    fn errors(text: &str) -> Vec<Located> {
        match Plan::from_text("p.toml", text, &Overrides::default()) {
            Err(PlanError::Invalid(v)) => v,
            Err(PlanError::File(ConfigError::Invalid(l))) => vec![l],
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn minimal_plan_loads_and_derives_the_ws_url() {
        let plan = Plan::from_text("p.toml", MINIMAL, &Overrides::default()).unwrap();
        assert_eq!(plan.ws_urls(), ["ws://127.0.0.1:1/ws"]);
        let over = Overrides {
            target: Some("https://staging.example/".into()),
            ws_target: None,
            ..Overrides::default()
        };
        let plan = Plan::from_text("p.toml", MINIMAL, &over).unwrap();
        assert_eq!(plan.ws_urls(), ["wss://staging.example/ws"]);
        // One string stays one string for the workers and the report.
        let json = serde_json::to_value(&plan.target).unwrap();
        assert_eq!(json["base_url"], "https://staging.example/");
    }

    #[test]
    fn several_targets_pair_up_by_index() {
        let text = MINIMAL.replace(
            "base_url = \"http://127.0.0.1:1\"",
            "base_url = [\"http://127.0.0.1:1\", \"https://127.0.0.2:2/\", \"http://127.0.0.3:3\"]",
        );
        let plan = Plan::from_text("p.toml", &text, &Overrides::default()).unwrap();
        assert_eq!(
            plan.endpoints(),
            [
                (
                    "http://127.0.0.1:1".to_owned(),
                    "ws://127.0.0.1:1/ws".to_owned()
                ),
                (
                    "https://127.0.0.2:2/".to_owned(),
                    "wss://127.0.0.2:2/ws".to_owned()
                ),
                (
                    "http://127.0.0.3:3".to_owned(),
                    "ws://127.0.0.3:3/ws".to_owned()
                ),
            ]
        );
        let json = serde_json::to_value(&plan.target).unwrap();
        assert_eq!(json["base_url"].as_array().unwrap().len(), 3);
        let back: Target = serde_json::from_value(json).unwrap();
        assert_eq!(back.base_url, plan.target.base_url);
        // One ws_url for every base_url.
        let one_ws = text.replace("[target]\n", "[target]\nws_url = \"ws://127.0.0.9:9/x\"\n");
        let plan = Plan::from_text("p.toml", &one_ws, &Overrides::default()).unwrap();
        assert_eq!(plan.endpoints().len(), 3);
        assert!(
            plan.endpoints()
                .iter()
                .all(|(_, ws)| ws == "ws://127.0.0.9:9/x")
        );
        // --target a,b: a list; --ws-target too.
        let over = Overrides {
            target: Some("http://127.0.0.5:5, http://127.0.0.6:6".into()),
            ..Overrides::default()
        };
        let plan = Plan::from_text("p.toml", MINIMAL, &over).unwrap();
        assert_eq!(
            plan.ws_urls(),
            ["ws://127.0.0.5:5/ws", "ws://127.0.0.6:6/ws"]
        );
        assert_eq!(
            plan.overrides,
            ["--target http://127.0.0.5:5,http://127.0.0.6:6"]
        );
    }

    #[test]
    fn a_bad_entry_of_a_target_list_is_named_by_its_index() {
        let text = MINIMAL.replace(
            "base_url = \"http://127.0.0.1:1\"",
            "base_url = [\"http://127.0.0.1:1\", \"http://127.0.0.2:2\", \"ftp://x\"]\nws_url = [\"ws://a/ws\", \"http://b/ws\"]",
        );
        let e = errors(&text);
        let fields: Vec<&str> = e.iter().map(|l| l.field.as_str()).collect();
        assert_eq!(
            fields,
            ["target.base_url[2]", "target.ws_url[1]", "target.ws_url"],
            "{e:?}"
        );
        assert!(
            e[0].message.contains("`ftp://x` must start with http://"),
            "{}",
            e[0]
        );
        assert_eq!(e[0].line, 4, "{}", e[0]);
        assert!(
            e[2].message
                .contains("2 entries, but target.base_url has 3"),
            "{}",
            e[2]
        );
        // A single string keeps its old location.
        let text = MINIMAL.replace("http://127.0.0.1:1", "ftp://x");
        assert_eq!(errors(&text)[0].field, "target.base_url");
        // An empty list, and something that is no URL at all.
        let text = MINIMAL.replace("base_url = \"http://127.0.0.1:1\"", "base_url = []");
        assert!(errors(&text)[0].message.contains("an empty list"));
        // Too many, from the command line.
        let over = Overrides {
            target: Some(vec!["http://127.0.0.1:1"; MAX_URLS + 1].join(",")),
            ..Overrides::default()
        };
        match Plan::from_text("p.toml", MINIMAL, &over) {
            Err(PlanError::Invalid(e)) => {
                assert!(e[0].message.contains("1025 URLs, more than 1024"), "{e:?}")
            }
            other => panic!("{other:?}"),
        }
        let text = MINIMAL.replace("base_url = \"http://127.0.0.1:1\"", "base_url = 5");
        assert!(
            errors(&text)[0].message.contains("a URL or a list of URLs"),
            "{:?}",
            errors(&text)
        );
    }

    #[test]
    fn unknown_step_field_points_at_its_line() {
        let text = MINIMAL.replace(
            "{ type = \"pong\" }",
            "{ type = \"pong\", timout = \"1s\" }",
        );
        let e = errors(&text);
        assert_eq!(e[0].line, 10, "{}", e[0]);
        assert!(e[0].message.contains("unknown field `timout`"), "{}", e[0]);
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = MINIMAL.replace(
            "ws_send = { json = { type = \"ping\" } }",
            "ws_send = { json = { type = \"{nope}\" } }",
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "scenarios[0].steps[1].ws_send.json.type");
        assert_eq!(e[0].line, 10);
        assert!(e[0].message.contains("`nope`"), "{}", e[0]);
    }

    /// A plan whose scenario defines `{thread}` and captures `{run_id}`, with its isolation
    /// check and one step template to be typo'd by the tests.
    const THREADS: &str = r#"name = "threads"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1

[[scenarios]]
name = "agent-run"
vars = { thread = "thread-{vu}-{iteration}" }
steps = [
  { ws_connect = { query = { thread_id = "{thread}" } } },
  { ws_send = { json = { type = "start_agent", thread_id = "{thread}" } } },
  { ws_expect = { type = "agent_started", capture = { run_id = "/run_id" } } },
  { ws_expect = { type = "agent_completed", match = [{ pointer = "/run_id", equals = "{run_id}" }] } },
]

[[isolation]]
name = "event-thread"
pointer = "/thread_id"
equals = "{thread}"
"#;

    fn messages(text: &str) -> Vec<String> {
        match Plan::from_text("plan.toml", text, &Overrides::default()) {
            Err(PlanError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
            other => panic!("expected semantic errors, got {other:?}"),
        }
    }

    #[test]
    fn every_template_variable_of_a_good_plan_is_known() {
        Plan::from_text("plan.toml", THREADS, &Overrides::default()).unwrap();
    }

    #[test]
    fn a_typo_in_an_isolation_template_names_the_variable_and_the_known_ones() {
        let text = THREADS.replace("equals = \"{thread}\"", "equals = \"{thread_id}\"");
        assert_eq!(
            messages(&text),
            [
                "plan.toml:21:10: isolation[0].equals: unknown template variable `thread_id` \
                 (known here: vu, iteration, subject, subject_index, scenario, uuid, now, \
                 now_ms, token, run_id, thread)"
            ]
        );
    }

    #[test]
    fn a_typo_in_a_step_template_names_the_variable_and_the_known_ones() {
        let text = THREADS.replace(
            "type = \"start_agent\", thread_id = \"{thread}\"",
            "type = \"start_agent\", thread_id = \"{thraed}\"",
        );
        assert_eq!(
            messages(&text),
            [
                "plan.toml:13:60: scenarios[0].steps[1].ws_send.json.thread_id: unknown template \
                 variable `thraed` (known here: vu, iteration, subject, subject_index, \
                 scenario, uuid, now, now_ms, token, thread)"
            ]
        );
        // In a matcher, a header, an HTTP path: the same.
        let text = THREADS.replace("equals = \"{run_id}\"", "equals = \"{runid}\"");
        let e = messages(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "plan.toml:15:86: scenarios[0].steps[3].ws_expect.match[0].equals: unknown \
                 template variable `runid` (known here: "
            ) && e[0].ends_with("token, run_id, thread)"),
            "{e:?}"
        );
        let text = THREADS.replace(
            "{ ws_connect = { query",
            "{ http = { path = \"/t/{thread}/{tread}\", headers = { x = \"{vu}{who}\" } } },\n  { ws_connect = { query",
        );
        let e = errors(&text);
        let fields: Vec<&str> = e.iter().map(|l| l.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "scenarios[0].steps[0].http.path",
                "scenarios[0].steps[0].http.headers.x"
            ],
            "{e:?}"
        );
        assert!(e[0].message.contains("`tread`"), "{}", e[0]);
        assert!(e[1].message.contains("`who`"), "{}", e[1]);
    }

    #[test]
    fn a_capture_is_known_after_its_step_and_everywhere_in_isolation_checks() {
        // Before the capturing step: defined, but not set yet.
        let text = THREADS.replace(
            "{ type = \"start_agent\", thread_id = \"{thread}\" }",
            "{ type = \"start_agent\", thread_id = \"{run_id}\" }",
        );
        assert_eq!(
            messages(&text),
            [
                "plan.toml:13:60: scenarios[0].steps[1].ws_send.json.thread_id: template \
                 variable `run_id` is captured by scenarios[0].steps[2].ws_expect.capture.run_id, \
                 after this template is rendered"
            ]
        );
        // Captured inside a repeat: known after it, and to isolation checks.
        let text = THREADS
            .replace(
                "{ ws_expect = { type = \"agent_started\", capture = { run_id = \"/run_id\" } } },",
                "{ repeat = { count = 2, steps = [{ ws_expect = { type = \"agent_started\", capture = { run_id = \"/run_id\" } } }] } },",
            )
            .replace("equals = \"{thread}\"", "equals = \"{run_id}\"");
        Plan::from_text("plan.toml", &text, &Overrides::default()).unwrap();
        // Scenario vars are rendered first, in name order.
        let text = THREADS.replace(
            "vars = { thread = \"thread-{vu}-{iteration}\" }",
            "vars = { thread = \"thread-{vu}-{run_id}\", a = \"{b}\", b = \"{vu}\", c = \"{b}-{c}\" }",
        );
        let e = messages(&text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains(
                "vars.a: template variable `b` is a scenario var rendered after this one"
            ),
            "{e:?}"
        );
        assert!(
            e[1].contains("vars.c: template variable `c` is this var itself"),
            "{e:?}"
        );
        assert!(
            e[2].contains(
                "vars.thread: template variable `run_id` is captured by \
                 scenarios[0].steps[2].ws_expect.capture.run_id, but scenario vars are rendered \
                 when the session starts"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn target_headers_read_any_scenario_variable_and_claims_none() {
        let text = THREADS.replace(
            "base_url = \"http://127.0.0.1:1\"",
            "base_url = \"http://127.0.0.1:1\"\nheaders = { x-thread = \"{thread}\" }",
        );
        Plan::from_text("plan.toml", &text, &Overrides::default()).unwrap();
        let text = text.replace("x-thread = \"{thread}\"", "x-thread = \"{thread}{stage}\"");
        let e = messages(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "plan.toml:4:24: target.headers.x-thread: unknown template variable `stage`"
            ),
            "{e:?}"
        );
        let text = format!(
            "{THREADS}[auth]\nsecret_env = \"K\"\nclaims = {{ t = [\"{{thread}}\"], u = \"{{usr}}\" }}\n"
        );
        let e = messages(&text);
        assert_eq!(
            e,
            [
                "plan.toml:24:17: auth.claims.t[0]: template variable `thread` is a scenario var \
                 or a capture, and tokens are minted before the session's vars exist",
                "plan.toml:24:34: auth.claims.u: unknown template variable `usr` (known here: vu, \
                 iteration, subject, subject_index, scenario, uuid, now, now_ms)"
            ]
        );
    }

    #[test]
    fn header_names_http_forbids_are_located() {
        let text = THREADS
            .replace(
                "base_url = \"http://127.0.0.1:1\"",
                "base_url = \"http://127.0.0.1:1\"\nheaders = { \"x thread\" = \"1\", X-Ok = \"2\" }",
            )
            .replace(
                "{ ws_connect = { query = { thread_id = \"{thread}\" } } },",
                "{ ws_connect = { headers = { \"a:b\" = \"{thread}\" } } },\n  \
                 { http = { path = \"/\", headers = { \"\" = \"{nope}\" } } },",
            );
        let e = messages(&text);
        let names = "(letters, digits and !#$%&'*+-.^_`|~ only)";
        assert_eq!(
            e,
            [
                format!("plan.toml:4:26: target.headers.x thread: `x thread` is not an HTTP header name {names}"),
                format!("plan.toml:13:40: scenarios[0].steps[0].ws_connect.headers.a:b: `a:b` is not an HTTP header name {names}"),
                format!("plan.toml:14:36: scenarios[0].steps[1].http.headers.: `` is not an HTTP header name {names}"),
                "plan.toml:14:36: scenarios[0].steps[1].http.headers.: unknown template variable `nope` \
                 (known here: vu, iteration, subject, subject_index, scenario, uuid, now, now_ms, \
                 token, thread)"
                    .to_owned(),
            ],
            "{e:?}"
        );
    }

    #[test]
    fn steps_need_an_open_socket_and_captures_flow_forward() {
        let text = MINIMAL.replace("{ ws_connect = {} }, ", "");
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|l| l.message.contains("needs an open WebSocket")),
            "{e:?}"
        );
        let text = MINIMAL.replace(
            "{ ws_expect = { type = \"pong\" } }",
            "{ ws_expect = { type = \"pong\", capture = { uid = \"/data/user_id\" } } }, { ws_send = { text = \"{uid}\" } }",
        );
        Plan::from_text("p.toml", &text, &Overrides::default()).unwrap();
    }

    #[test]
    fn load_models_are_checked() {
        let text = MINIMAL.replace("vus = 1\niterations = 1", "model = \"open\"\nrate = 5");
        let e = errors(&text);
        let msgs: Vec<&str> = e.iter().map(|l| l.message.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("max_vus")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("needs duration or stages")),
            "{msgs:?}"
        );
    }

    #[test]
    fn auth_needs_one_matching_key_source() {
        let text = format!("{MINIMAL}\n[auth]\nalgorithm = \"RS256\"\nsecret_env = \"X\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "auth.secret_env");
        assert!(e[0].line > 0);
    }

    #[test]
    fn loads_that_cannot_run_are_refused() {
        let text = MINIMAL.replace("vus = 1", "vus = 4294967295");
        let e = errors(&text);
        assert_eq!(e[0].field, "load.vus", "{e:?}");
        assert!(
            e[0].message
                .contains("4294967295 VUs cannot run: at most 10000000"),
            "{}",
            e[0]
        );
        assert!(e[0].line > 0);
    }

    #[test]
    fn thresholds_and_fleet_are_checked() {
        let text = format!("{MINIMAL}\n[[thresholds]]\nmetric = \"session\"\nbelow = \"1s\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "thresholds[0]");
        assert!(e[0].message.contains("stat and below"), "{}", e[0]);
        assert!(e[0].line > 0);
        let text = format!("{MINIMAL}\n[fleet]\non_worker_loss = \"shrug\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "fleet.on_worker_loss");
        let text = format!(
            "{MINIMAL}\n[fleet]\nmin_workers = 3\non_worker_loss = \"abort\"\n[[thresholds]]\nfailures = \"*\"\nrate_below = 0.01\n"
        );
        let plan = Plan::from_text("p.toml", &text, &Overrides::default()).unwrap();
        assert_eq!(plan.fleet.min_workers, Some(3));
        assert_eq!(plan.thresholds.len(), 1);
    }

    #[test]
    fn nan_and_inf_in_json_values_are_refused() {
        let text = MINIMAL.replace("{ type = \"ping\" }", "{ type = \"ping\", x = [1, nan] }");
        let e = errors(&text);
        assert_eq!(
            e[0].field, "scenarios[0].steps[1].ws_send.json.x[1]",
            "{}",
            e[0]
        );
        assert_eq!((e[0].line, e[0].col), (10, 78), "{}", e[0]);
        assert!(e[0].message.contains("no JSON form"), "{}", e[0]);
        let text = format!("{MINIMAL}[auth]\nsecret_env = \"K\"\nclaims = {{ r = inf }}\n");
        assert_eq!(errors(&text)[0].field, "auth.claims.r");
    }

    #[test]
    fn missing_target_says_how_to_set_it() {
        let text = MINIMAL.replace("[target]\nbase_url = \"http://127.0.0.1:1\"\n", "");
        let e = errors(&text);
        assert!(e[0].message.contains("--target"), "{}", e[0]);
    }
}
