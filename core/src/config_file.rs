//! Load a TOML file into a typed value, reporting every problem as
//! `file:line:col: field: what is wrong` (the format `gauntlet validate` prints).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration or plan file that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but its content is wrong at a known place.
    #[error(transparent)]
    Invalid(#[from] Located),
}

/// One problem at one place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file's name as the user gave it.
    pub file: String,
    /// 1-based line, or 0 when the problem has no single place (e.g. a missing field).
    pub line: usize,
    /// 1-based column, or 0 with `line`.
    pub col: usize,
    /// The dotted path of the field (`faults.auth_reject.rate`), empty for the whole file.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Located {}

/// Reads and parses `path`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&path.display().to_string(), &text)?)
}

/// Parses `text`, naming it `file` in errors.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Located> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| locate(file, text, "", &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        locate(file, text, &field, e.inner())
    })
}

/// Builds a [`Located`] for a problem found after parsing, at the first line that sets `key`
/// inside `[table]` (best effort: line 0 when the key cannot be found).
pub fn locate_key(file: &str, text: &str, table: &str, key: &str, message: String) -> Located {
    let mut current = String::new();
    let mut line_no = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .into();
            if table == current && key.is_empty() {
                line_no = i + 1;
                break;
            }
            continue;
        }
        let Some((k, _)) = trimmed.split_once('=') else {
            continue;
        };
        if current == table && k.trim().trim_matches('"') == key {
            line_no = i + 1;
            break;
        }
    }
    let field = match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => table.to_owned(),
        (false, false) => format!("{table}.{key}"),
    };
    Located {
        file: file.to_owned(),
        line: line_no,
        col: if line_no > 0 { 1 } else { 0 },
        field,
        message,
    }
}

/// Builds a [`Located`] for a problem found after parsing, at the value of `path` (the dotted
/// form `serde_path_to_error` prints: `scenarios[0].steps[2].ws_expect.timeout`). When the path
/// runs out before its end, points at the deepest part that exists (best effort).
pub fn locate_path(file: &str, text: &str, path: &str, message: String) -> Located {
    let offset = span_of_path(text, path).map(|span| span.start);
    let (line, col) = offset.map_or((0, 0), |o| line_col(text, o));
    Located {
        file: file.to_owned(),
        line,
        col,
        field: path.to_owned(),
        message,
    }
}

/// The byte span of the value at `path` in `text`, or of its deepest existing ancestor.
fn span_of_path(text: &str, path: &str) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            segments.push(Err(key));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse::<usize>() {
                segments.push(Ok(i));
            }
            rest = after.trim_start_matches('[');
        }
    }
    let mut current: Option<&DeValue<'_>> = None;
    let mut span = root.span();
    for segment in segments {
        let next = match (current, segment) {
            (None, Err(key)) => root
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == key)
                .map(|(_, v)| v),
            (Some(value), Err(key)) => value.get(key),
            (Some(value), Ok(index)) => value.get(index),
            (None, Ok(_)) => None,
        };
        let Some(next) = next else { break };
        span = next.span();
        current = Some(next.get_ref());
    }
    Some(span)
}

fn locate(file: &str, text: &str, field: &str, error: &toml::de::Error) -> Located {
    let (line, col) = match error.span() {
        Some(span) => line_col(text, span.start),
        None => (0, 0),
    };
    Located {
        file: file.to_owned(),
        line,
        col,
        field: field.to_owned(),
        message: error.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Rate;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        rate: Rate,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn syntax_error_points_at_line_and_column() {
        let err = parse::<Doc>("a.toml", "name = \"x\"\n[inner]\nrate = = 1\n").unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("a.toml", 3));
        assert!(err.col >= 7, "{err}");
    }

    #[test]
    fn bad_value_names_field_line_and_column() {
        let err = parse::<Doc>("a.toml", "name = \"x\"\n[inner]\nrate = 1.5\n").unwrap_err();
        assert_eq!(err.field, "inner.rate");
        assert_eq!((err.line, err.col), (3, 8));
        assert!(err.message.contains("between 0 and 1"), "{err}");
        assert_eq!(
            err.to_string(),
            format!("a.toml:3:8: inner.rate: {}", err.message)
        );
    }

    #[test]
    fn wrong_type_and_unknown_field_are_located() {
        let err = parse::<Doc>("a.toml", "name = \"x\"\n[inner]\ncount = \"many\"\n").unwrap_err();
        assert_eq!((err.field.as_str(), err.line), ("inner.count", 3));
        let err = parse::<Doc>("a.toml", "name = \"x\"\n[inner]\ncolour = 1\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse::<Doc>("a.toml", "[inner]\n").unwrap_err();
        assert!(err.message.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn locate_key_finds_the_line() {
        let text = "a = 1\n[t]\nb = 2\n[u]\nb = 3\n";
        let l = locate_key("f", text, "u", "b", "bad".into());
        assert_eq!((l.line, l.field.as_str()), (5, "u.b"));
        assert_eq!(l.to_string(), "f:5:1: u.b: bad");
    }

    #[test]
    fn locate_path_walks_tables_and_arrays() {
        let text = "name = \"x\"\n[[s]]\na = 1\n[[s]]\n[s.k]\nt = \"5x\"\n";
        let l = locate_path("f", text, "s[1].k.t", "bad".into());
        assert_eq!((l.line, l.col), (6, 5), "{l}");
        let l = locate_path("f", text, "s[1].k.missing", "bad".into());
        assert_eq!(l.line, 5, "{l}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("é = 1\nxy", 8), (2, 2));
    }
}
