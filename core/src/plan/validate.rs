//! Validation of a plan as written: every semantic problem, each with the path of the field
//! it is about (located in the file by the caller), all at once and in a stable order. Works
//! on [`PlanSpec`]: what is valid resolves into a typed [`super::Plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::auth::{Algorithm, AuthSpec as Auth};
use super::check::MatcherSpec as Matcher;
use super::load::{MAX_RATE, MAX_VUS, Model, Pause};
use super::spec::{PlanSpec, StepSpec as Step};
use crate::template::{Builtin, Template};

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
                p.add(&format!("thresholds[{i}]"), msg);
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
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.add(
                        "target.base_url",
                        format!("`{url}` must start with http:// or https://"),
                    );
                }
            }
        }
        if let Some(url) = &self.target.ws_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            p.add(
                "target.ws_url",
                format!("`{url}` must start with ws:// or wss://"),
            );
        }
        if !self.target.ws_path.starts_with('/') {
            p.add("target.ws_path", "must start with `/`".into());
        }
        for (name, value) in &self.target.headers {
            p.template(value, &format!("target.headers.{name}"), everywhere);
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

/// What the validator knows about the WebSocket at a point in a scenario.
#[derive(Debug, Default, Clone)]
struct WsState {
    open: bool,
    marks: BTreeSet<String>,
}

fn check_steps(steps: &[Step], at: &str, scope: &mut Scope, ws: &mut WsState, p: &mut Problems) {
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}[{i}].{}", step.kind());
        if let Some(name) = step.name() {
            check_name_loose(name, &format!("{at}.name"), p);
        }
        let needs_ws = matches!(
            step,
            Step::WsSend(_)
                | Step::WsExpect(_)
                | Step::WsExpectSequence(_)
                | Step::WsPing(_)
                | Step::WsClose(_)
        );
        if needs_ws && !ws.open {
            p.add(
                &at,
                format!(
                    "`{}` needs an open WebSocket: add a ws_connect step before it",
                    step.kind()
                ),
            );
        }
        match step {
            Step::WsConnect(s) => {
                if let Some(path) = &s.path
                    && !path.starts_with('/')
                {
                    p.add(&format!("{at}.path"), "must start with `/`".into());
                }
                for (k, v) in &s.query {
                    p.template(v, &format!("{at}.query.{k}"), scope);
                }
                for (k, v) in &s.headers {
                    p.template(v, &format!("{at}.headers.{k}"), scope);
                }
                for (j, m) in s.confirmation.iter().enumerate() {
                    p.matcher(m, &format!("{at}.confirmation[{j}]"), scope);
                }
                if let Some(r) = &s.expect_rejection {
                    if r.status.is_none() && r.close_code.is_none() {
                        p.add(
                            &format!("{at}.expect_rejection"),
                            "give status (handshake) and/or close_code".into(),
                        );
                    }
                    if !s.confirmation.is_empty() {
                        p.add(
                            &format!("{at}.confirmation"),
                            "a connection expected to be rejected has no confirmation".into(),
                        );
                    }
                    ws.open = false;
                } else {
                    ws.open = true;
                }
                p.nonzero(s.timeout, &format!("{at}.timeout"));
            }
            Step::WsSend(s) => {
                match (&s.json, &s.text) {
                    (Some(json), None) => {
                        p.finite(json, &format!("{at}.json"));
                        each_string_at(json, &format!("{at}.json"), &mut |t, field| {
                            p.template(t, field, scope);
                        });
                    }
                    (None, Some(text)) => p.template(text, &format!("{at}.text"), scope),
                    _ => p.add(&at, "give exactly one of json and text".into()),
                }
                ws.marks
                    .insert(s.mark.clone().unwrap_or_else(|| "send".into()));
            }
            Step::WsExpect(s) => {
                if s.frame_type.is_none() && s.matchers.is_empty() {
                    p.add(&at, "give `type` or at least one `match`".into());
                }
                for (j, m) in s.matchers.iter().enumerate() {
                    p.matcher(m, &format!("{at}.match[{j}]"), scope);
                }
                p.since(s.since.as_deref(), ws, &format!("{at}.since"));
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::WsExpectSequence(s) => {
                p.pointer(&s.type_pointer, &format!("{at}.type_pointer"));
                match (s.orders.is_empty(), s.set.is_empty()) {
                    (true, true) => p.add(&at, "give `orders` or `set`".into()),
                    (false, false) => p.add(&at, "give `orders` or `set`, not both".into()),
                    _ => {}
                }
                for (j, order) in s.orders.iter().enumerate() {
                    if order.is_empty() {
                        p.add(
                            &format!("{at}.orders[{j}]"),
                            "an order needs at least one type".into(),
                        );
                    }
                }
                let mut seen = BTreeSet::new();
                for t in &s.set {
                    if !seen.insert(t) {
                        p.add(&format!("{at}.set"), format!("`{t}` is listed twice"));
                    }
                }
                let expected: BTreeSet<&String> = s.orders.iter().flatten().chain(&s.set).collect();
                for t in s.ignore.iter().chain(&s.error_types) {
                    if expected.contains(t) {
                        p.add(
                            &at,
                            format!("`{t}` is both expected and in ignore/error_types"),
                        );
                    }
                }
                for t in &s.terminal {
                    if !expected.contains(t) {
                        p.add(
                            &format!("{at}.terminal"),
                            format!("`{t}` is not an expected type"),
                        );
                    }
                }
                p.since(s.since.as_deref(), ws, &format!("{at}.since"));
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                if let Some(g) = s.gap_timeout {
                    p.nonzero(g, &format!("{at}.gap_timeout"));
                }
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::WsPing(s) => p.nonzero(s.timeout, &format!("{at}.timeout")),
            Step::WsClose(s) => {
                if !matches!(s.code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    p.add(
                        &format!("{at}.code"),
                        format!("{} is not a close code a client may send", s.code),
                    );
                }
                ws.open = false;
            }
            Step::Http(s) => {
                let method_ok =
                    !s.method.is_empty() && s.method.chars().all(|c| c.is_ascii_uppercase());
                if !method_ok {
                    p.add(
                        &format!("{at}.method"),
                        format!("`{}` is not an HTTP method (GET, POST, ...)", s.method),
                    );
                }
                p.template(&s.path, &format!("{at}.path"), scope);
                for (k, v) in &s.headers {
                    p.template(v, &format!("{at}.headers.{k}"), scope);
                }
                if s.json.is_some() && s.body.is_some() {
                    p.add(&at, "give json or body, not both".into());
                }
                if let Some(json) = &s.json {
                    p.finite(json, &format!("{at}.json"));
                    each_string_at(json, &format!("{at}.json"), &mut |t, field| {
                        p.template(t, field, scope);
                    });
                }
                if let Some(body) = &s.body {
                    p.template(body, &format!("{at}.body"), scope);
                }
                for status in &s.expect_status {
                    if !(100..=599).contains(status) {
                        p.add(
                            &format!("{at}.expect_status"),
                            format!("{status} is not an HTTP status"),
                        );
                    }
                }
                for (j, m) in s.matchers.iter().enumerate() {
                    p.matcher(m, &format!("{at}.match[{j}]"), scope);
                }
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::Sleep(s) => {
                if let Pause::Uniform { min, max } = s.duration
                    && min > max
                {
                    p.add(&format!("{at}.duration"), "min is above max".into());
                }
            }
            Step::Repeat(s) => {
                if s.count == 0 {
                    p.add(&format!("{at}.count"), "must be at least 1".into());
                }
                if s.steps.is_empty() {
                    p.add(&format!("{at}.steps"), "needs at least one step".into());
                }
                let before = ws.clone();
                check_steps(&s.steps, &format!("{at}.steps"), scope, ws, p);
                if before.open != ws.open && s.count > 1 {
                    p.add(
                        &format!("{at}.steps"),
                        "the repeated steps must leave the WebSocket as they found it (open or closed)".into(),
                    );
                }
            }
        }
    }
}

fn check_name(name: &str, at: &str, p: &mut Problems) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        p.add(
            at,
            format!("`{name}` must be lowercase letters, digits, _ or -"),
        );
    }
}

fn check_name_loose(name: &str, at: &str, p: &mut Problems) {
    if name.trim().is_empty() || name.contains('\n') {
        p.add(at, "a name needs visible text on one line".into());
    }
}

/// Calls `f` on every string inside `value` with its field path below `at`
/// (`at.payload.items[0]`), so a problem points at the string itself.
fn each_string_at(value: &Value, at: &str, f: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(s) => f(s, at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                each_string_at(v, &format!("{at}[{i}]"), f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                each_string_at(v, &format!("{at}.{k}"), f);
            }
        }
        _ => {}
    }
}

/// What a template may read at one place of a plan.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// Variables set when a template here is rendered (besides the builtins).
    known: BTreeSet<String>,
    /// Variables defined nearby but not set yet when a template here is rendered, with why
    /// (`is captured by scenarios[0].steps[3].ws_expect.capture.run_id, ...`).
    later: BTreeMap<String, String>,
    /// Builtins a template here cannot use (checked apart; left out of the list of known names).
    excluded: Vec<Builtin>,
}

impl Scope {
    /// The names a template here may read, builtins first: `vu, iteration, ..., thread`.
    fn names(&self) -> String {
        Builtin::ALL
            .iter()
            .filter(|(_, b)| !self.excluded.contains(b))
            .map(|(n, _)| *n)
            .chain(self.known.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every variable the steps capture (inside `repeat` too), with the field of its first capture.
fn captures_of(steps: &[Step], at: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}[{i}].{}", step.kind());
        let capture = match step {
            Step::WsExpect(s) => &s.capture,
            Step::WsExpectSequence(s) => &s.capture,
            Step::Http(s) => &s.capture,
            Step::Repeat(s) => {
                for (name, field) in captures_of(&s.steps, &format!("{at}.steps")) {
                    out.entry(name).or_insert(field);
                }
                continue;
            }
            _ => continue,
        };
        for name in capture.keys() {
            out.entry(name.clone())
                .or_insert_with(|| format!("{at}.capture.{name}"));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: &str, message: String) {
        self.0.push((path.to_owned(), message));
    }

    fn nonzero(&mut self, d: Duration, at: &str) {
        if d.is_zero() {
            self.add(at, "must be above 0".into());
        }
    }

    /// Checks a template's syntax and that every variable it reads is known in `scope`.
    fn template(&mut self, text: &str, at: &str, scope: &Scope) {
        let t = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => return self.add(at, e.0),
        };
        let mut seen = BTreeSet::new();
        for v in t.vars() {
            if scope.known.contains(v) || !seen.insert(v) {
                continue;
            }
            let message = match scope.later.get(v) {
                Some(why) => format!("template variable `{v}` {why}"),
                None => format!(
                    "unknown template variable `{v}` (known here: {})",
                    scope.names()
                ),
            };
            self.add(at, message);
        }
    }

    fn pointer(&mut self, pointer: &str, at: &str) {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            self.add(
                at,
                format!("`{pointer}` is not a JSON pointer (start it with `/`)"),
            );
        }
    }

    /// TOML has no null: a null in a JSON value was a `nan` or `inf`, which serde_json turns
    /// into null without a word, so the plan would send or expect something else than it says.
    fn finite(&mut self, value: &Value, at: &str) {
        match value {
            Value::Null => self.add(at, "`nan` and `inf` have no JSON form".into()),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.finite(v, &format!("{at}[{i}]"));
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.finite(v, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    fn regex(&mut self, re: &str, at: &str) {
        if let Err(e) = regex::Regex::new(re) {
            self.add(at, format!("bad regex: {e}"));
        }
    }

    fn matcher(&mut self, m: &Matcher, at: &str, scope: &Scope) {
        self.pointer(&m.pointer, &format!("{at}.pointer"));
        let given = [
            m.equals.is_some(),
            m.regex.is_some(),
            m.exists.is_some(),
            m.one_of.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            self.add(
                at,
                "give exactly one of equals, regex, exists, one_of".into(),
            );
        }
        if let Some(Value::String(s)) = &m.equals {
            self.template(s, &format!("{at}.equals"), scope);
        }
        if let Some(v) = &m.equals {
            self.finite(v, &format!("{at}.equals"));
        }
        for (i, v) in m.one_of.iter().flatten().enumerate() {
            self.finite(v, &format!("{at}.one_of[{i}]"));
        }
        if let Some(re) = &m.regex {
            self.regex(re, &format!("{at}.regex"));
        }
    }

    fn since(&mut self, since: Option<&str>, ws: &WsState, at: &str) {
        if let Some(mark) = since
            && !ws.marks.contains(mark)
        {
            self.add(at, format!("no earlier ws_send sets mark `{mark}`"));
        }
    }

    fn captures(&mut self, capture: &BTreeMap<String, String>, at: &str, scope: &mut Scope) {
        for (name, pointer) in capture {
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || Builtin::ALL.iter().any(|(n, _)| n == name) {
                self.add(
                    &format!("{at}.{name}"),
                    format!("`{name}` cannot be a variable name"),
                );
            }
            self.pointer(pointer, &format!("{at}.{name}"));
            scope.known.insert(name.clone());
        }
    }
}
