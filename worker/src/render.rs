//! Rendering templates for one session: the plan's templates with `{env:NAME}` already
//! resolved, filled from the VU's context. Templates without placeholders render without
//! allocating (JSON frames are then serialized once, when the plan is compiled).

use crate::error::CompileError;

use std::time::{SystemTime, UNIX_EPOCH};

use gauntlet_core::template::{Builtin, Part, Template};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::rng::Rng;

/// Variables of one session: scenario `vars` and captured values, by name.
#[derive(Debug, Default)]
pub struct Vars(Vec<(String, String)>);

impl Vars {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`.
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Forgets everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// What a template can read.
#[derive(Debug)]
pub struct Context<'a> {
    /// VU id.
    pub vu: u64,
    /// Session count of this VU.
    pub iteration: u64,
    /// JWT subject.
    pub subject: &'a str,
    /// Subject number.
    pub subject_index: u64,
    /// Scenario name.
    pub scenario: &'a str,
    /// JWT (empty without auth).
    pub token: &'a str,
    /// Session variables.
    pub vars: &'a Vars,
}

/// Unix time now.
pub fn unix_now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Renders `t`; `None` if it reads a variable not set yet.
pub fn render(t: &Template, ctx: &Context<'_>, rng: &mut Rng) -> Option<String> {
    if let Some(s) = t.as_literal() {
        return Some(s.to_owned());
    }
    let mut out = String::new();
    render_into(t, ctx, rng, &mut out).then_some(out)
}

/// Renders `t` at the end of `out`; `false` if it reads a variable not set yet (`out` then
/// holds part of it).
pub fn render_into(t: &Template, ctx: &Context<'_>, rng: &mut Rng, out: &mut String) -> bool {
    use std::fmt::Write as _;
    for part in &t.parts {
        match part {
            Part::Literal(s) => out.push_str(s),
            Part::Builtin(b) => {
                let _ = match b {
                    Builtin::Vu => write!(out, "{}", ctx.vu),
                    Builtin::Iteration => write!(out, "{}", ctx.iteration),
                    Builtin::Subject => write!(out, "{}", ctx.subject),
                    Builtin::SubjectIndex => write!(out, "{}", ctx.subject_index),
                    Builtin::Scenario => write!(out, "{}", ctx.scenario),
                    Builtin::Uuid => {
                        out.extend(rng.uuid_bytes().iter().map(|&b| char::from(b)));
                        Ok(())
                    }
                    Builtin::Now => write!(out, "{}", unix_now().as_secs()),
                    Builtin::NowMs => write!(out, "{}", unix_now().as_millis()),
                    Builtin::Token => write!(out, "{}", ctx.token),
                };
            }
            // Resolved when the plan is compiled; never left in a compiled template.
            Part::Env(_) => {}
            Part::Var(v) => match ctx.vars.get(v) {
                Some(value) => out.push_str(value),
                None => return false,
            },
        }
    }
    true
}

/// Replaces `{env:NAME}` with the variable's value; `Err(NAME)` if it is not set.
pub fn resolve_env(t: &Template) -> Result<Template, String> {
    let mut parts = Vec::with_capacity(t.parts.len());
    for part in &t.parts {
        let part = match part {
            Part::Env(name) => Part::Literal(std::env::var(name).map_err(|_| name.clone())?),
            other => other.clone(),
        };
        match (parts.last_mut(), part) {
            (Some(Part::Literal(prev)), Part::Literal(s)) => prev.push_str(&s),
            (_, part) => parts.push(part),
        }
    }
    Ok(Template { parts })
}

/// Parses a plan template (already validated) and resolves its environment variables.
pub fn compile(text: &str) -> Result<Template, CompileError> {
    let t = Template::parse(text).map_err(|e| e.0)?;
    resolve_env(&t)
        .map_err(|name| CompileError(format!("environment variable `{name}` is not set")))
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    /// No placeholder anywhere: the frame text, serialized once.
    Fixed(Utf8Bytes, Value),
    /// Rebuilt at each rendering.
    Dynamic(Node),
}

/// A node of a dynamic JSON template.
#[derive(Debug, Clone)]
pub enum Node {
    /// A value without strings to render.
    Literal(Value),
    /// A string template.
    Text(Template),
    /// An array.
    Array(Vec<Node>),
    /// An object.
    Object(Vec<(String, Node)>),
}

impl JsonTemplate {
    /// Compiles `value`, resolving environment variables.
    pub fn compile(value: &Value) -> Result<JsonTemplate, CompileError> {
        let node = compile_node(value)?;
        if is_fixed(&node) {
            let value = to_value_fixed(&node);
            Ok(JsonTemplate::Fixed(value.to_string().into(), value))
        } else {
            Ok(JsonTemplate::Dynamic(node))
        }
    }

    /// The frame text.
    pub fn render_text(&self, ctx: &Context<'_>, rng: &mut Rng) -> Option<Utf8Bytes> {
        match self {
            JsonTemplate::Fixed(text, _) => Some(text.clone()),
            JsonTemplate::Dynamic(node) => Some(render_node(node, ctx, rng)?.to_string().into()),
        }
    }

    /// The value.
    pub fn render_value(&self, ctx: &Context<'_>, rng: &mut Rng) -> Option<Value> {
        match self {
            JsonTemplate::Fixed(_, v) => Some(v.clone()),
            JsonTemplate::Dynamic(node) => render_node(node, ctx, rng),
        }
    }
}

fn compile_node(value: &Value) -> Result<Node, CompileError> {
    Ok(match value {
        Value::String(s) => {
            let t = compile(s)?;
            match t.as_literal() {
                Some(lit) => Node::Literal(Value::String(lit.to_owned())),
                None => Node::Text(t),
            }
        }
        Value::Array(items) => {
            Node::Array(items.iter().map(compile_node).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile_node(v)?)))
                .collect::<Result<_, CompileError>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn is_fixed(node: &Node) -> bool {
    match node {
        Node::Literal(_) => true,
        Node::Text(_) => false,
        Node::Array(items) => items.iter().all(is_fixed),
        Node::Object(fields) => fields.iter().all(|(_, v)| is_fixed(v)),
    }
}

fn to_value_fixed(node: &Node) -> Value {
    match node {
        Node::Literal(v) => v.clone(),
        Node::Text(t) => Value::String(t.to_string()),
        Node::Array(items) => Value::Array(items.iter().map(to_value_fixed).collect()),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_value_fixed(v)))
                .collect(),
        ),
    }
}

fn render_node(node: &Node, ctx: &Context<'_>, rng: &mut Rng) -> Option<Value> {
    Some(match node {
        Node::Literal(v) => v.clone(),
        Node::Text(t) => Value::String(render(t, ctx, rng)?),
        Node::Array(items) => Value::Array(
            items
                .iter()
                .map(|n| render_node(n, ctx, rng))
                .collect::<Option<_>>()?,
        ),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Some((k.clone(), render_node(v, ctx, rng)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ctx(vars: &Vars) -> Context<'_> {
        Context {
            vu: 7,
            iteration: 2,
            subject: "user-3",
            subject_index: 3,
            scenario: "s",
            token: "tok",
            vars,
        }
    }

    #[test]
    fn renders_builtins_and_vars() {
        let mut vars = Vars::default();
        vars.set("run_id", "r1".into());
        let t = compile("{vu}/{iteration}/{subject}/{subject_index}/{run_id}/{token}").unwrap();
        let mut rng = Rng::keyed(&[1]);
        assert_eq!(
            render(&t, &ctx(&vars), &mut rng).unwrap(),
            "7/2/user-3/3/r1/tok"
        );
        let t = compile("{missing}").unwrap();
        assert!(render(&t, &ctx(&vars), &mut rng).is_none());
    }

    #[test]
    fn fixed_json_is_serialized_once() {
        let t = JsonTemplate::compile(&json!({"type": "ping", "n": 1})).unwrap();
        assert!(matches!(t, JsonTemplate::Fixed(..)));
        let t = JsonTemplate::compile(&json!({"type": "x", "who": "{subject}"})).unwrap();
        let vars = Vars::default();
        let v = t.render_value(&ctx(&vars), &mut Rng::keyed(&[1])).unwrap();
        assert_eq!(v, json!({"type": "x", "who": "user-3"}));
    }

    #[test]
    fn missing_env_is_named() {
        let err = compile("{env:GAUNTLET_SURELY_UNSET_VAR}").unwrap_err();
        assert!(err.contains("GAUNTLET_SURELY_UNSET_VAR"), "{err}");
    }
}
