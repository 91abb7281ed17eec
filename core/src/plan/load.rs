//! The load model: closed (VUs running sessions back to back, fixed or ramped, bound by
//! iterations or time) or open (sessions arriving at a rate, fixed or ramped, on a pool of
//! VUs). [`LoadSpec`] is the `[load]` table as written; [`Load`] is what it resolves to, each
//! model holding exactly its own settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most VUs a plan may ask for: 10 million (a fleet of 1,000 workers at 10,000 each).
pub const MAX_VUS: u64 = 10_000_000;
/// The highest arrival rate a plan may ask for, sessions per second.
pub const MAX_RATE: f64 = 10_000_000.0;

/// Closed or open load model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A fixed (or ramping) number of VUs, each running sessions back to back.
    #[default]
    Closed,
    /// Sessions arrive at a rate, whatever the target's speed.
    Open,
}

/// One ramp: reach `target` (VUs, or sessions/s in the open model) linearly over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Length of the ramp.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    /// Value at the end of the ramp.
    pub target: f64,
}

/// A fixed or uniformly random pause.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Serialize)]
#[serde(untagged)]
pub enum Pause {
    /// `"1s"`.
    Fixed(
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        Duration,
    ),
    /// `{ min = "1s", max = "3s" }`.
    Uniform {
        /// Shortest.
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        min: Duration,
        /// Longest.
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        max: Duration,
    },
}

/// How much load, how fast, as the plan file writes it (`[load]`): one flat table for both
/// models, checked by validation and resolved into [`Load`].
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// `closed` (VUs) or `open` (arrival rate).
    #[serde(default)]
    pub model: Model,
    /// Closed: VUs (the start value when `stages` ramp).
    #[serde(default)]
    pub vus: Option<u64>,
    /// Closed: sessions per VU, then the VU stops.
    #[serde(default)]
    pub iterations: Option<u64>,
    /// How long new sessions start.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// Ramps of VUs (closed) or of the arrival rate (open), one after the other.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Time sessions still running at the end get to finish before they are interrupted.
    #[serde(default = "default_graceful_stop", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub graceful_stop: Duration,
    /// Open: sessions per second (the start value when `stages` ramp).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open: VUs available to run arrivals; an arrival finding none free is dropped (counted).
    #[serde(default)]
    pub max_vus: Option<u64>,
    /// Pause between two sessions of one VU (closed model).
    #[serde(default)]
    pub think_time: Option<Pause>,
}

fn default_graceful_stop() -> Duration {
    Duration::from_secs(10)
}

impl LoadSpec {
    /// The closed model's largest VU count, or the open model's VU cap.
    pub fn max_vus(&self) -> u64 {
        match self.model {
            Model::Closed => self
                .stages
                .iter()
                .map(|s| s.target.max(0.0).ceil() as u64)
                .chain(self.vus)
                .max()
                .unwrap_or(0),
            Model::Open => self.max_vus.unwrap_or(0),
        }
    }

    /// The resolved load (validation has checked that the model has what it needs).
    pub(super) fn resolve(&self) -> Load {
        match self.model {
            Model::Closed => Load::Closed(Closed {
                vus: if self.stages.is_empty() {
                    VuSchedule::Fixed {
                        vus: self.vus.unwrap_or(0),
                        duration: self.duration,
                    }
                } else {
                    VuSchedule::Stages {
                        start: self.vus.unwrap_or(0),
                        stages: self.stages.clone(),
                    }
                },
                iterations: self.iterations,
                think_time: self.think_time,
                graceful_stop: self.graceful_stop,
            }),
            Model::Open => Load::Open(Open {
                rate: if self.stages.is_empty() {
                    RateSchedule::Fixed {
                        rate: self.rate.unwrap_or(0.0),
                        duration: self.duration.unwrap_or_default(),
                    }
                } else {
                    RateSchedule::Stages {
                        start: self.rate.unwrap_or(0.0),
                        stages: self.stages.clone(),
                    }
                },
                max_vus: self.max_vus.unwrap_or(0),
                graceful_stop: self.graceful_stop,
            }),
        }
    }
}

/// How much load, how fast.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// VUs running sessions back to back.
    Closed(Closed),
    /// Sessions arriving on a schedule.
    Open(Open),
}

/// The closed model.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Closed {
    /// How many VUs run, over time.
    pub vus: VuSchedule,
    /// Sessions per VU, then the VU stops (with a fixed VU count and no duration, the only
    /// bound of the run).
    pub iterations: Option<u64>,
    /// Pause between two sessions of one VU.
    pub think_time: Option<Pause>,
    /// Time sessions still running at the end get to finish before they are interrupted.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub graceful_stop: Duration,
}

/// The closed model's VUs over time.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VuSchedule {
    /// A fixed count, for `duration` (or until every VU ran its iterations).
    Fixed {
        /// VUs.
        vus: u64,
        /// How long new sessions start.
        #[serde(with = "humantime_serde::option")]
        #[schemars(with = "Option<String>")]
        duration: Option<Duration>,
    },
    /// Ramps from `start`, one stage after the other.
    Stages {
        /// VUs at the start.
        start: u64,
        /// The ramps.
        stages: Vec<Stage>,
    },
}

/// The open model.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Open {
    /// Sessions per second, over time.
    pub rate: RateSchedule,
    /// VUs available to run arrivals; an arrival finding none free is dropped (counted).
    pub max_vus: u64,
    /// Time sessions still running at the end get to finish before they are interrupted.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub graceful_stop: Duration,
}

/// The open model's arrival rate over time.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSchedule {
    /// A fixed rate for `duration`.
    Fixed {
        /// Sessions per second.
        rate: f64,
        /// How long sessions arrive.
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        duration: Duration,
    },
    /// Ramps from `start`, one stage after the other.
    Stages {
        /// Sessions per second at the start.
        start: f64,
        /// The ramps.
        stages: Vec<Stage>,
    },
}

impl Load {
    /// Closed or open.
    pub fn model(&self) -> Model {
        match self {
            Load::Closed(_) => Model::Closed,
            Load::Open(_) => Model::Open,
        }
    }

    /// Time sessions still running at the end get to finish.
    pub fn graceful_stop(&self) -> Duration {
        match self {
            Load::Closed(c) => c.graceful_stop,
            Load::Open(o) => o.graceful_stop,
        }
    }

    /// Closed model: sessions per VU, if bounded.
    pub fn iterations(&self) -> Option<u64> {
        match self {
            Load::Closed(c) => c.iterations,
            Load::Open(_) => None,
        }
    }

    /// The sessions the run starts in all when only iterations bound it (the closed model's
    /// fixed VUs, no duration): VUs x iterations, what a progress bar counts to. `None` when
    /// time bounds the run (or the product overflows).
    pub fn planned_sessions(&self) -> Option<u64> {
        match self {
            Load::Closed(Closed {
                vus:
                    VuSchedule::Fixed {
                        vus,
                        duration: None,
                    },
                iterations: Some(iterations),
                ..
            }) => vus.checked_mul(*iterations),
            _ => None,
        }
    }

    /// Closed model: the pause between two sessions of one VU.
    pub fn think_time(&self) -> Option<Pause> {
        match self {
            Load::Closed(c) => c.think_time,
            Load::Open(_) => None,
        }
    }

    /// The closed model's largest VU count, or the open model's VU cap.
    pub fn max_vus(&self) -> u64 {
        match self {
            Load::Closed(c) => match &c.vus {
                VuSchedule::Fixed { vus, .. } => *vus,
                VuSchedule::Stages { start, stages } => stages
                    .iter()
                    .map(|s| s.target.max(0.0).ceil() as u64)
                    .chain([*start])
                    .max()
                    .unwrap_or(0),
            },
            Load::Open(o) => o.max_vus,
        }
    }

    /// The ramp's start value (VUs, or sessions/s) and its stages; a fixed load for a duration
    /// is one flat stage, one bound by iterations only has none.
    pub fn ramp(&self) -> (f64, Vec<Stage>) {
        let flat = |value: f64, duration: Option<Duration>| {
            let stages = duration
                .map(|duration| {
                    vec![Stage {
                        duration,
                        target: value,
                    }]
                })
                .unwrap_or_default();
            (value, stages)
        };
        match self {
            Load::Closed(c) => match &c.vus {
                VuSchedule::Fixed { vus, duration } => flat(*vus as f64, *duration),
                VuSchedule::Stages { start, stages } => (*start as f64, stages.clone()),
            },
            Load::Open(o) => match &o.rate {
                RateSchedule::Fixed { rate, duration } => flat(*rate, Some(*duration)),
                RateSchedule::Stages { start, stages } => (*start, stages.clone()),
            },
        }
    }
}

/// Load settings given for one run (`gauntlet run --vus 20 --duration 30s`, `--rate`,
/// `--stage 30s:100`, or each step of `gauntlet capacity`): they replace the plan's `[load]`
/// before it is validated, as k6's `--vus`/`--duration`/`--stage` replace its scenarios.
///
/// - `rate` switches the plan to the open model, `vus` or `iterations` (without `rate`) to the
///   closed one; otherwise the plan's model stays.
/// - `stages` replace the plan's stages (and its `duration`); any other setting given clears
///   the plan's stages, so `--vus 50 --duration 1m` is a flat 50 VUs for a minute whatever
///   the plan ramps.
/// - `iterations` without `duration` bounds the run by iterations only; `duration` without
///   `iterations` bounds it by time only (the plan's iterations go).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadOverride {
    /// Closed: VUs (the ramp's start with `stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vus: Option<u64>,
    /// Closed: sessions per VU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// How long new sessions start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// Open: sessions per second (the ramp's start with `stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Open: VUs available to run arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vus: Option<u64>,
    /// Ramps replacing the plan's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
}

impl LoadOverride {
    /// Nothing given.
    pub fn is_empty(&self) -> bool {
        *self == LoadOverride::default()
    }

    /// Replaces the plan's `[load]` settings with these.
    pub fn apply(&self, spec: &mut LoadSpec) {
        if self.is_empty() {
            return;
        }
        let model = if self.rate.is_some() {
            Model::Open
        } else if self.vus.is_some() || self.iterations.is_some() {
            Model::Closed
        } else {
            spec.model
        };
        if model != spec.model {
            match model {
                // What belongs to the other model goes: the override says what this one runs.
                Model::Open => {
                    spec.vus = None;
                    spec.iterations = None;
                    spec.think_time = None;
                }
                Model::Closed => {
                    spec.rate = None;
                    spec.max_vus = None;
                }
            }
            spec.model = model;
        }
        if self.stages.is_empty() {
            spec.stages.clear();
            if self.duration.is_some() {
                spec.duration = self.duration;
                if self.iterations.is_none() {
                    spec.iterations = None;
                }
            } else if self.iterations.is_some() {
                spec.duration = None;
            }
        } else {
            spec.stages = self.stages.clone();
            spec.duration = None;
            if model == Model::Open && self.rate.is_none() && spec.rate.is_none() {
                spec.rate = Some(0.0);
            }
        }
        if let Some(vus) = self.vus {
            spec.vus = Some(vus);
        }
        if let Some(iterations) = self.iterations {
            spec.iterations = Some(iterations);
        }
        if let Some(rate) = self.rate {
            spec.rate = Some(rate);
        }
        if let Some(max_vus) = self.max_vus {
            spec.max_vus = Some(max_vus);
        }
    }

    /// The flags a problem at `[load]` field `field` (`load.vus`, `load.stages[1].target`)
    /// comes from, when it comes from these rather than the plan file: the flag that set that
    /// field, or, when these switched the plan to the other model (`switched`), every one of
    /// them (the plan's `[load]` was written for the model they replaced).
    pub fn source_of(&self, field: &str, switched: bool) -> Option<String> {
        let name = field
            .strip_prefix("load.")
            .or_else(|| (field == "load").then_some(""))?;
        let name = name.split(['.', '[']).next().unwrap_or(name);
        let given = match name {
            "vus" => self.vus.map(|v| format!("--vus {v}")),
            "iterations" => self.iterations.map(|v| format!("--iterations {v}")),
            "duration" => self
                .duration
                .map(|d| format!("--duration {}", humantime::format_duration(d))),
            "rate" => self.rate.map(|r| format!("--rate {r}")),
            "max_vus" => self.max_vus.map(|v| format!("--max-vus {v}")),
            "stages" if !self.stages.is_empty() => Some(
                self.describe()
                    .into_iter()
                    .filter(|f| f.starts_with("--stage"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        };
        given.or_else(|| (switched && !self.is_empty()).then(|| self.describe().join(" ")))
    }

    /// Flags that cannot go together: the closed model's (`--vus`, `--iterations`) with the
    /// open model's (`--rate`, `--max-vus`).
    pub fn conflict(&self) -> Option<String> {
        let closed: Vec<String> = [
            self.vus.map(|v| format!("--vus {v}")),
            self.iterations.map(|v| format!("--iterations {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let open: Vec<String> = [
            self.rate.map(|r| format!("--rate {r}")),
            self.max_vus.map(|v| format!("--max-vus {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!closed.is_empty() && !open.is_empty()).then(|| {
            format!(
                "{} and {} cannot go together: --vus and --iterations run the closed model (VUs), --rate and --max-vus the open one (arrivals)",
                closed.join(" "),
                open.join(" ")
            )
        })
    }

    /// Whether these switch a `[load]` of model `model` to the other one.
    pub fn switches(&self, model: Model) -> bool {
        if self.rate.is_some() {
            model != Model::Open
        } else if self.vus.is_some() || self.iterations.is_some() {
            model != Model::Closed
        } else {
            false
        }
    }

    /// The override as command-line flags (`--vus 20`, `--stage 30s:100`), for the report.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(v) = self.vus {
            out.push(format!("--vus {v}"));
        }
        if let Some(v) = self.iterations {
            out.push(format!("--iterations {v}"));
        }
        if let Some(d) = self.duration {
            out.push(format!("--duration {}", humantime::format_duration(d)));
        }
        if let Some(r) = self.rate {
            out.push(format!("--rate {r}"));
        }
        if let Some(v) = self.max_vus {
            out.push(format!("--max-vus {v}"));
        }
        for s in &self.stages {
            out.push(format!(
                "--stage {}:{}",
                humantime::format_duration(s.duration),
                s.target
            ));
        }
        out
    }
}

/// Reads `--stage DURATION:TARGET` (`30s:100`, `1m30s:0`).
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    let (duration, target) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: a stage is DURATION:TARGET, e.g. 30s:100"))?;
    let duration = humantime::parse_duration(duration.trim())
        .map_err(|e| format!("`{text}`: bad duration `{duration}`: {e}"))?;
    let target: f64 = target
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: bad target `{target}` (a number of VUs or sessions/s)"))?;
    if !target.is_finite() || target < 0.0 {
        return Err(format!("`{text}`: the target must be a number >= 0"));
    }
    Ok(Stage { duration, target })
}

#[cfg(test)]
mod override_tests {
    use super::*;

    fn spec(toml_text: &str) -> LoadSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn only_a_run_bound_by_iterations_has_planned_sessions() {
        let planned = |text: &str| spec(text).resolve().planned_sessions();
        assert_eq!(planned("vus = 20\niterations = 5"), Some(100));
        assert_eq!(
            planned("vus = 20\niterations = 5\nduration = \"10s\""),
            None
        );
        assert_eq!(planned("vus = 20\nduration = \"10s\""), None);
        assert_eq!(
            planned("vus = 1\niterations = 2\nstages = [{ duration = \"10s\", target = 5 }]"),
            None
        );
        assert_eq!(
            planned("model = \"open\"\nrate = 5.0\nmax_vus = 10\nduration = \"10s\""),
            None
        );
    }

    #[test]
    fn vus_and_duration_flatten_a_ramp() {
        let mut s = spec("vus = 1\nstages = [{ duration = \"10s\", target = 50 }]");
        LoadOverride {
            vus: Some(20),
            duration: Some(Duration::from_secs(30)),
            ..LoadOverride::default()
        }
        .apply(&mut s);
        assert!(s.stages.is_empty());
        assert_eq!(s.vus, Some(20));
        assert_eq!(s.duration, Some(Duration::from_secs(30)));
        assert_eq!(s.model, Model::Closed);
    }

    #[test]
    fn rate_switches_to_open_and_drops_closed_settings() {
        let mut s = spec("vus = 10\niterations = 5");
        LoadOverride {
            rate: Some(50.0),
            max_vus: Some(100),
            duration: Some(Duration::from_secs(5)),
            ..LoadOverride::default()
        }
        .apply(&mut s);
        assert_eq!(s.model, Model::Open);
        assert_eq!((s.vus, s.iterations), (None, None));
        assert_eq!((s.rate, s.max_vus), (Some(50.0), Some(100)));
    }

    #[test]
    fn iterations_alone_bound_by_iterations() {
        let mut s = spec("vus = 10\nduration = \"1m\"");
        LoadOverride {
            iterations: Some(3),
            ..LoadOverride::default()
        }
        .apply(&mut s);
        assert_eq!((s.iterations, s.duration), (Some(3), None));
    }

    #[test]
    fn stages_replace_duration_and_describe_round_trips() {
        let mut s = spec("vus = 10\nduration = \"1m\"");
        let o = LoadOverride {
            stages: vec![
                parse_stage("30s:100").unwrap(),
                parse_stage("1m:0").unwrap(),
            ],
            ..LoadOverride::default()
        };
        o.apply(&mut s);
        assert_eq!(s.duration, None);
        assert_eq!(s.stages.len(), 2);
        assert_eq!(o.describe(), ["--stage 30s:100", "--stage 1m:0"]);
        assert!(parse_stage("30s").is_err());
        assert!(parse_stage("soon:5").is_err());
        assert!(parse_stage("1s:-1").is_err());
        assert!(parse_stage("1s:NaN").is_err());
    }
}
