//! Validation of a plan as written: every semantic problem, each with the path of the field
//! it is about (located in the file by the caller), all at once and in a stable order. Works
//! on [`PlanSpec`]: what is valid resolves into a typed [`super::Plan`].
//!
//! # Layout
//! - this file: the plan's parts (target, auth, load, scenarios, isolation, thresholds,
//!   fleet, classifiers), in the order problems are reported;
//! - `steps`: a scenario's steps (the WebSocket's state, marks, captures as they flow);
//! - `problems`: the list of problems, what templates may read where, names and pointers.

mod problems;
mod steps;

use std::collections::BTreeSet;
use std::time::Duration;

use super::auth::{Algorithm, AuthSpec as Auth};
use super::load::{MAX_RATE, MAX_VUS, Model, Pause};
use super::spec::PlanSpec;
use crate::template::{Builtin, Template};
use problems::{Problems, Scope, check_name, each_string_at};
use steps::{WsState, captures_of, check_steps};

impl PlanSpec {
    /// Every semantic problem as `(path, message)`, in the order they are reported.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        // What templates applied to every session (target headers, isolation checks) may read.
        let everywhere = self.scenario_scope();
        self.check_target(&everywhere, &mut p);
        if let Some(auth) = &self.auth {
            check_auth(auth, &everywhere, &mut p);
        }
        self.check_load(&mut p);
        if self.scenarios.is_empty() {
            p.add(
                "scenarios",
                "a plan needs at least one [[scenarios]]".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, scenario) in self.scenarios.iter().enumerate() {
            let at = format!("scenarios[{i}]");
            if !names.insert(scenario.name.as_str()) {
                p.add(
                    &format!("{at}.name"),
                    format!("scenario `{}` is defined twice", scenario.name),
                );
            }
            check_name(&scenario.name, &format!("{at}.name"), &mut p);
            if scenario.weight == 0 && self.scenarios.len() == 1 {
                p.add(
                    &format!("{at}.weight"),
                    "the only scenario needs a weight above 0".into(),
                );
            }
            let captured = captures_of(&scenario.steps, &format!("{at}.steps"));
            // Scenario vars are rendered at session start, in name order: each reads the
            // builtins and the vars before it.
            let mut scope = Scope::default();
            for (name, field) in &captured {
                scope.later.insert(
                    name.clone(),
                    format!(
                        "is captured by {field}, but scenario vars are rendered when the \
                         session starts, before any step"
                    ),
                );
            }
            for name in scenario.vars.keys() {
                scope.later.insert(
                    name.clone(),
                    "is a scenario var rendered after this one (vars are rendered in name \
                     order)"
                        .into(),
                );
            }
            for (name, value) in &scenario.vars {
                check_name(name, &format!("{at}.vars.{name}"), &mut p);
                scope.later.insert(
                    name.clone(),
                    "is this var itself (vars are rendered in name order)".into(),
                );
                p.template(value, &format!("{at}.vars.{name}"), &scope);
                scope.later.remove(name);
                scope.known.insert(name.clone());
            }
            // Steps read the vars and what earlier steps captured.
            for (name, field) in &captured {
                scope.later.insert(
                    name.clone(),
                    format!("is captured by {field}, after this template is rendered"),
                );
            }
            if scenario.steps.is_empty() {
                p.add(
                    &format!("{at}.steps"),
                    "a scenario needs at least one step".into(),
                );
            }
            let mut ws = WsState::default();
            check_steps(
                &scenario.steps,
                &format!("{at}.steps"),
                &mut scope,
                &mut ws,
                &mut p,
            );
        }
        if self.scenarios.iter().all(|s| s.weight == 0) && self.scenarios.len() > 1 {
            p.add(
                "scenarios",
                "every scenario has weight 0: nothing would run".into(),
            );
        }
        // Isolation values apply to every scenario: they may read any scenario's vars and
        // captures (a check is skipped in a session where its value is not set yet).
        for (i, check) in self.isolation.iter().enumerate() {
            let at = format!("isolation[{i}]");
            p.pointer(&check.pointer, &format!("{at}.pointer"));
            p.template(&check.equals, &format!("{at}.equals"), &everywhere);
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            if let Err(msg) = t.check() {
                p.add(&format!("thresholds[{i}]"), msg.0);
            }
        }
        if let Some(d) = self.fleet.interval
            && d < Duration::from_millis(100)
        {
            p.add("fleet.interval", "must be at least 100ms".into());
        }
        if let Some(f) = self.fleet.min_delivered
            && !(0.0..=1.0).contains(&f)
        {
            p.add(
                "fleet.min_delivered",
                format!("must be a fraction between 0 and 1, not {f}"),
            );
        }
        if let Some(d) = self.fleet.deadline
            && d < Duration::from_secs(1)
        {
            p.add("fleet.deadline", "must be at least 1s".into());
        }
        for (i, c) in self.classifiers.iter().enumerate() {
            let at = format!("classifiers[{i}]");
            check_name(&c.category, &format!("{at}.category"), &mut p);
            if c.close_code.is_none()
                && c.close_reason.is_none()
                && c.error_code.is_none()
                && c.frame_regex.is_none()
                && c.http_status.is_none()
            {
                p.add(
                    &at,
                    "a classifier needs at least one of close_code, close_reason, error_code, \
                     frame_regex, http_status"
                        .into(),
                );
            }
            for (field, re) in [
                ("close_reason", &c.close_reason),
                ("frame_regex", &c.frame_regex),
            ] {
                if let Some(re) = re {
                    p.regex(re, &format!("{at}.{field}"));
                }
            }
        }
        p.0
    }

    /// What a template outside the scenarios, applied to every session (isolation checks,
    /// target headers), may read: the builtins and every scenario's vars and captures.
    fn scenario_scope(&self) -> Scope {
        let mut scope = Scope::default();
        for (i, scenario) in self.scenarios.iter().enumerate() {
            scope.known.extend(scenario.vars.keys().cloned());
            let captured = captures_of(&scenario.steps, &format!("scenarios[{i}].steps"));
            scope.known.extend(captured.into_keys());
        }
        scope
    }

    fn check_target(&self, everywhere: &Scope, p: &mut Problems) {
        match &self.target.base_url {
            None => p.add(
                "target.base_url",
                "no target: set target.base_url in the plan, or pass --target / GAUNTLET_TARGET"
                    .into(),
            ),
            Some(urls) => check_urls(urls, "target.base_url", &["http://", "https://"], p),
        }
        if let Some(urls) = &self.target.ws_url {
            check_urls(urls, "target.ws_url", &["ws://", "wss://"], p);
            let (b, w) = (
                self.target
                    .base_url
                    .as_ref()
                    .map_or(0, |u| u.as_slice().len()),
                urls.as_slice().len(),
            );
            if b > 1 && w > 1 && b != w {
                p.add(
                    "target.ws_url",
                    format!(
                        "{w} entries, but target.base_url has {b}: list one WebSocket URL, or \
                         one per base URL (entry i goes with base URL i)"
                    ),
                );
            }
        }
        if !self.target.ws_path.starts_with('/') {
            p.add("target.ws_path", "must start with `/`".into());
        }
        for (name, value) in &self.target.headers {
            p.header(name, value, &format!("target.headers.{name}"), everywhere);
        }
        if self.target.connect_timeout.is_zero() {
            p.add("target.connect_timeout", "must be above 0".into());
        }
        for (field, v) in [
            ("target.max_response_bytes", self.target.max_response_bytes),
            ("target.max_message_bytes", self.target.max_message_bytes),
        ] {
            if !(1..=(256 << 20)).contains(&v) {
                p.add(
                    field,
                    format!("must be between 1 and 268435456 (256 MiB), not {v}"),
                );
            }
        }
    }

    fn check_load(&self, p: &mut Problems) {
        let load = &self.load;
        for (i, stage) in load.stages.iter().enumerate() {
            if !(stage.target.is_finite() && stage.target >= 0.0) {
                p.add(
                    &format!("load.stages[{i}].target"),
                    "must be 0 or more".into(),
                );
            }
            if load.model == Model::Closed && stage.target.fract() != 0.0 {
                p.add(
                    &format!("load.stages[{i}].target"),
                    "closed-model stages count VUs: use a whole number".into(),
                );
            }
        }
        if !load.stages.is_empty() && load.duration.is_some() {
            p.add(
                "load.duration",
                "give either duration or stages (the stages' sum is the duration)".into(),
            );
        }
        // Loads that run nothing validate as nothing, not as a run that then ends in error.
        if load.duration.is_some_and(|d| d.is_zero()) {
            p.add(
                "load.duration",
                "must be above 0 (a load of no time starts no session)".into(),
            );
        }
        if !load.stages.is_empty() && load.stages.iter().all(|s| s.duration.is_zero()) {
            p.add(
                "load.stages",
                "the stages last 0s in all: no session would start".into(),
            );
        }
        if load.model == Model::Open && load.rate.is_none_or(|r| r.is_finite() && r >= 0.0) {
            // Arrivals the load schedules: the area under its rate, stage by stage.
            let start = load.rate.unwrap_or(0.0);
            let arrivals = if load.stages.is_empty() {
                start * load.duration.map_or(0.0, |d| d.as_secs_f64())
            } else {
                let mut from = start;
                let mut sum = 0.0;
                for s in &load.stages {
                    sum += (from + s.target) / 2.0 * s.duration.as_secs_f64();
                    from = s.target;
                }
                sum
            };
            let timed = load.duration.is_some_and(|d| !d.is_zero())
                || load.stages.iter().any(|s| !s.duration.is_zero());
            if timed && arrivals < 1.0 {
                p.add(
                    if load.stages.is_empty() {
                        "load.rate"
                    } else {
                        "load.stages"
                    },
                    format!(
                        "schedules {arrivals:.2} arrivals in all: no session would start (raise the rate or the duration)"
                    ),
                );
            }
        }
        if let Some(Pause::Uniform { min, max }) = load.think_time
            && min > max
        {
            p.add("load.think_time", "min is above max".into());
        }
        // Loads no fleet can run: each VU holds a connection, a task and its buffers, and the
        // coordinator numbers arrivals one by one.
        if self.load.max_vus() > MAX_VUS {
            let field = match load.model {
                Model::Closed if load.stages.is_empty() => "load.vus",
                Model::Closed => "load.stages",
                Model::Open => "load.max_vus",
            };
            p.add(
                field,
                format!(
                    "{} VUs cannot run: at most {MAX_VUS} (about 8 KiB of memory and an open file each, on some worker)",
                    self.load.max_vus()
                ),
            );
        }
        let peak_rate = load
            .stages
            .iter()
            .map(|s| s.target)
            .chain(load.rate)
            .fold(0.0f64, f64::max);
        if load.model == Model::Open && peak_rate > MAX_RATE {
            p.add(
                if load.stages.is_empty() {
                    "load.rate"
                } else {
                    "load.stages"
                },
                format!("{peak_rate} sessions per second cannot run: at most {MAX_RATE}"),
            );
        }
        match load.model {
            Model::Closed => {
                if load.vus.is_none() && load.stages.is_empty() {
                    p.add("load.vus", "the closed model needs vus (or stages)".into());
                }
                if load.iterations.is_none() && load.duration.is_none() && load.stages.is_empty() {
                    p.add(
                        "load",
                        "the closed model needs iterations, duration or stages to end".into(),
                    );
                }
                if load.iterations == Some(0) {
                    p.add("load.iterations", "must be at least 1".into());
                }
                if self.load.max_vus() == 0 {
                    p.add(
                        "load.vus",
                        "no VU would ever run: set vus or a stage target above 0".into(),
                    );
                }
                for field in ["rate", "max_vus"] {
                    let set = match field {
                        "rate" => load.rate.is_some(),
                        _ => load.max_vus.is_some(),
                    };
                    if set {
                        p.add(
                            &format!("load.{field}"),
                            format!("`{field}` belongs to the open model (model = \"open\")"),
                        );
                    }
                }
            }
            Model::Open => {
                match load.rate {
                    None if load.stages.is_empty() => {
                        p.add("load.rate", "the open model needs rate (or stages)".into());
                    }
                    Some(r) if !(r.is_finite() && r >= 0.0) => {
                        p.add("load.rate", "must be 0 or more sessions per second".into());
                    }
                    _ => {}
                }
                if load.max_vus.unwrap_or(0) == 0 {
                    p.add(
                        "load.max_vus",
                        "the open model needs max_vus of at least 1".into(),
                    );
                }
                if load.duration.is_none() && load.stages.is_empty() {
                    p.add("load", "the open model needs duration or stages".into());
                }
                if load.vus.is_some() {
                    p.add(
                        "load.vus",
                        "the open model sizes its pool with max_vus".into(),
                    );
                }
                if load.iterations.is_some() {
                    p.add(
                        "load.iterations",
                        "`iterations` belongs to the closed model".into(),
                    );
                }
            }
        }
    }
}

fn check_auth(auth: &Auth, scenarios: &Scope, p: &mut Problems) {
    let sources = [
        ("secret_env", auth.secret_env.is_some()),
        ("secret_file", auth.secret_file.is_some()),
        ("key_env", auth.key_env.is_some()),
        ("key_file", auth.key_file.is_some()),
    ];
    let given: Vec<&str> = sources
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    let wanted = match auth.algorithm {
        Algorithm::HS256 => "secret_env or secret_file",
        _ => "key_env or key_file",
    };
    match given.as_slice() {
        [] => p.add("auth", format!("{:?} needs {wanted}", auth.algorithm)),
        [one] => {
            let is_secret = one.starts_with("secret");
            if is_secret != (auth.algorithm == Algorithm::HS256) {
                p.add(
                    &format!("auth.{one}"),
                    format!("{:?} reads its key from {wanted}", auth.algorithm),
                );
            }
        }
        many => p.add(
            &format!("auth.{}", many[1]),
            format!("give one key source, not {}", many.join(" and ")),
        ),
    }
    if auth.lifetime.is_zero() {
        p.add("auth.lifetime", "must be above 0".into());
    }
    if auth.subject_pool == Some(0) {
        p.add("auth.subject_pool", "must be at least 1".into());
    }
    // A token is minted before the session's vars exist: only builtins.
    let minted_before = |excluded: &[Builtin]| {
        let mut scope = Scope {
            excluded: excluded.to_vec(),
            ..Scope::default()
        };
        for name in &scenarios.known {
            scope.later.insert(
                name.clone(),
                "is a scenario var or a capture, and tokens are minted before the session's \
                 vars exist"
                    .into(),
            );
        }
        scope
    };
    let subject_scope = minted_before(&[Builtin::Subject, Builtin::Token]);
    if let Ok(t) = Template::parse(&auth.subject)
        && t.builtins()
            .any(|b| matches!(b, Builtin::Subject | Builtin::Token))
    {
        p.add("auth.subject", "cannot use {subject} or {token}".into());
    }
    p.template(&auth.subject, "auth.subject", &subject_scope);
    let claim_scope = minted_before(&[Builtin::Token]);
    for (name, value) in &auth.claims {
        p.finite(value, &format!("auth.claims.{name}"));
        each_string_at(value, &format!("auth.claims.{name}"), &mut |s, at| {
            if let Ok(t) = Template::parse(s)
                && t.builtins().any(|b| b == Builtin::Token)
            {
                p.add(at, "a claim cannot use {token}".into());
            }
            p.template(s, at, &claim_scope);
        });
    }
}

/// Every entry of a URL list starts with one of `schemes`; a list is not empty.
fn check_urls(urls: &crate::plan::Urls, field: &str, schemes: &[&str], p: &mut Problems) {
    if urls.as_slice().is_empty() {
        p.add(field, "an empty list: give one URL or several".into());
    }
    if urls.as_slice().len() > crate::plan::MAX_URLS {
        p.add(
            field,
            format!(
                "{} URLs, more than {}",
                urls.as_slice().len(),
                crate::plan::MAX_URLS
            ),
        );
        return;
    }
    for (i, url) in urls.as_slice().iter().enumerate() {
        if !schemes.iter().any(|s| url.starts_with(s)) {
            p.add(
                &urls.location(field, i),
                format!("`{url}` must start with {}", schemes.join(" or ")),
            );
        }
    }
}
