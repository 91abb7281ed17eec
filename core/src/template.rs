//! String templates used across a plan (`"user-{vu}"`, `"{env:STAGE}"`): parsed once when the
//! plan loads, so a bad placeholder is a plan error and rendering never re-parses.

use std::fmt;

/// A value the engine knows for every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// The VU's fleet-unique number (0-based); open model: `k % max_vus` for arrival `k`.
    Vu,
    /// The VU's session count so far (0-based); open model: `k / max_vus` for arrival `k`.
    Iteration,
    /// The VU's JWT subject (`auth.subject` rendered).
    Subject,
    /// The subject's number in the pool (0-based).
    SubjectIndex,
    /// The scenario's name.
    Scenario,
    /// A fresh random UUID (v4) at each rendering.
    Uuid,
    /// Unix time in seconds.
    Now,
    /// Unix time in milliseconds.
    NowMs,
    /// The session's JWT (empty without `[auth]`).
    Token,
}

impl Builtin {
    /// Every builtin with its placeholder name.
    pub const ALL: [(&'static str, Builtin); 9] = [
        ("vu", Builtin::Vu),
        ("iteration", Builtin::Iteration),
        ("subject", Builtin::Subject),
        ("subject_index", Builtin::SubjectIndex),
        ("scenario", Builtin::Scenario),
        ("uuid", Builtin::Uuid),
        ("now", Builtin::Now),
        ("now_ms", Builtin::NowMs),
        ("token", Builtin::Token),
    ];

    /// The placeholder name.
    pub fn name(self) -> &'static str {
        Builtin::ALL
            .iter()
            .find(|(_, b)| *b == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Literal(String),
    /// `{vu}`, `{uuid}`...
    Builtin(Builtin),
    /// `{env:NAME}`: an environment variable of the worker, read when the run starts.
    Env(String),
    /// `{name}`: a scenario variable or a value captured by an earlier step (the plan's
    /// validation checks that the name is defined where the template is used).
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// Its pieces, in order.
    pub parts: Vec<Part>,
}

/// A template that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Template {
    /// Parses `text`: `{name}` is a placeholder, `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "unmatched `}}` at character {} (write `}}}}` for a literal brace)",
                        text[..i].chars().count() + 1
                    )));
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError(format!(
                            "unclosed `{{` at character {} (write `{{{{` for a literal brace)",
                            text[..i].chars().count() + 1
                        )));
                    };
                    let name = rest[..end].trim();
                    for _ in 0..rest[..end].chars().count() + 1 {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(name)?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The text itself when the template has no placeholder.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Names of the variables (`Part::Var`) it reads.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Builtins it reads.
    pub fn builtins(&self) -> impl Iterator<Item = Builtin> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Builtin(b) => Some(*b),
            _ => None,
        })
    }

    /// Environment variables it reads.
    pub fn envs(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Env(v) => Some(v.as_str()),
            _ => None,
        })
    }
}

fn placeholder(name: &str) -> Result<Part, TemplateError> {
    if let Some(var) = name.strip_prefix("env:") {
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError(format!(
                "`{{env:{var}}}` needs an environment variable name (letters, digits, _)"
            )));
        }
        return Ok(Part::Env(var.to_owned()));
    }
    if let Some((_, b)) = Builtin::ALL.iter().find(|(n, _)| *n == name) {
        return Ok(Part::Builtin(*b));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(TemplateError(format!(
            "`{{{name}}}` is not a placeholder: use a builtin ({}), `env:NAME` or a variable \
             name (letters, digits, _)",
            Builtin::ALL.map(|(n, _)| n).join(", ")
        )));
    }
    Ok(Part::Var(name.to_owned()))
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(s) => write!(f, "{}", s.replace('{', "{{").replace('}', "}}"))?,
                Part::Builtin(b) => write!(f, "{{{}}}", b.name())?,
                Part::Env(v) => write!(f, "{{env:{v}}}")?,
                Part::Var(v) => write!(f, "{{{v}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_builtins_env_vars_and_escapes() {
        let t = Template::parse("u-{vu}:{env:STAGE}/{run_id}{{x}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("u-".into()),
                Part::Builtin(Builtin::Vu),
                Part::Literal(":".into()),
                Part::Env("STAGE".into()),
                Part::Literal("/".into()),
                Part::Var("run_id".into()),
                Part::Literal("{x}".into()),
            ]
        );
        assert_eq!(t.to_string(), "u-{vu}:{env:STAGE}/{run_id}{{x}}");
        assert_eq!(
            Template::parse("plain").unwrap().as_literal(),
            Some("plain")
        );
    }

    #[test]
    fn rejects_bad_placeholders() {
        for bad in ["{", "a}", "{a b}", "{env:}", "{}", "{env:A-B}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_positions_count_characters() {
        let e = Template::parse("é}").unwrap_err();
        assert!(e.0.contains("at character 2"), "{e}");
        let e = Template::parse("ü🚀{vu").unwrap_err();
        assert!(e.0.contains("at character 3"), "{e}");
    }

    #[test]
    fn multibyte_text_survives() {
        let t = Template::parse("é{vu}ü").unwrap();
        assert_eq!(t.to_string(), "é{vu}ü");
    }
}
