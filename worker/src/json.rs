//! A received frame's JSON, parsed once with its strings borrowed from the frame's text: the
//! checks read it by JSON pointer as they would a `serde_json::Value`, but a frame costs one
//! list per object or array instead of a string per name and value and a map node per member.
//!
//! It answers as `serde_json::Value` does: a repeated name's last value counts, pointers follow
//! RFC 6901 with serde_json's rules for array indices, numbers compare as `serde_json::Number`,
//! and [`Display`](std::fmt::Display) prints what `Value` would print (objects by sorted name).
//! One deliberate exception: serde_json's `raw_value` feature (which another crate in the build
//! turns on) makes `Value` read an object whose first name is its private marker
//! `$serde_json::private::RawValue` as the JSON inside that member's string. A frame is the
//! target's to write, so here that object is an object like any other.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// A JSON value borrowing its strings (those without escapes) from the text it was parsed from.
#[derive(Debug, Clone)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json keeps it.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object's members in the order they came; a repeated name's last value counts.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `text`; `None` if it is not JSON.
    pub fn parse(text: &'a str) -> Option<Json<'a>> {
        serde_json::from_str(text).ok()
    }

    /// Parses `bytes`; `None` if they are not JSON.
    pub fn parse_slice(bytes: &'a [u8]) -> Option<Json<'a>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value of member `name` (the last one of that name), if this is an object.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == name).map(|m| &m.1),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value at an RFC 6901 JSON pointer, as `serde_json::Value::pointer` finds it.
    pub fn pointer(&self, pointer: &str) -> Option<&Json<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let tokens = pointer.strip_prefix('/')?;
        tokens.split('/').try_fold(self, |node, token| {
            let token: Cow<'_, str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            match node {
                Json::Object(_) => node.get(&token),
                Json::Array(items) => index(&token).and_then(|i| items.get(i)),
                _ => None,
            }
        })
    }
}

/// An array index as serde_json reads one: digits, no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// An object's members as `Value` holds them: one per name (the last of that name), sorted by
/// name. O(n log n), so a hostile frame of many members costs no more than `Value` did.
fn by_name<'m, 'a>(members: &'m [(Cow<'a, str>, Json<'a>)]) -> Vec<&'m (Cow<'a, str>, Json<'a>)> {
    let mut sorted: Vec<&(Cow<'a, str>, Json<'a>)> = members.iter().collect();
    // A stable sort: members of one name stay in the order they came, the last one last.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut kept: Vec<&(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(sorted.len());
    for member in sorted {
        match kept.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => kept.push(member),
        }
    }
    kept
}

impl PartialEq<Value> for Json<'_> {
    /// Equal as the `Value` this text would have parsed to would be.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::Number(a), Value::Number(b)) => a == b,
            (Json::String(a), Value::String(b)) => a == b,
            (Json::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Json::Object(members), Value::Object(map)) => {
                // Both sorted by name, one member per name.
                let mine = by_name(members);
                mine.len() == map.len()
                    && mine
                        .iter()
                        .zip(map)
                        .all(|(m, (k, v))| m.0 == *k && m.1 == *v)
            }
            _ => false,
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(t) => s.serialize_str(t),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let kept = by_name(members);
                let mut map = s.serialize_map(Some(kept.len()))?;
                for (name, value) in kept {
                    map.serialize_entry(name.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Json<'_> {
    /// Compact JSON, as `Value` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        // As `Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            members.push((name, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// A member's name, borrowed from the text when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Texts whose answers must equal `Value`'s: nesting, escapes in names and strings,
    /// repeated names, numbers of every kind, arrays, unicode.
    const TEXTS: &[&str] = &[
        r#"{"type":"agent_started","run_id":"r1","user_id":"user-1","payload":{"status":"ok","n":3}}"#,
        r#"{"a":1,"a":2,"b":{"c":[10,{"d":"x"}],"c":[20]}}"#,
        r#"{"a\/b":"s\"q","m~n":"tilde","~1":"escaped tilde","e\u00e9":"caf\u00e9","":"empty"}"#,
        r#"{"n":-7,"u":18446744073709551615,"f":1.5,"g":1.0,"z":0,"e":1e3,"neg":-0.0}"#,
        r#"[1,"two",null,true,false,[],{},{"k":[0,1,2]}]"#,
        r#""just a string""#,
        "42",
        "null",
        r#"{"nested":{"deeper":{"deepest":{"x":null}}},"list":[[[1]]]}"#,
    ];

    const POINTERS: &[&str] = &[
        "",
        "/",
        "/type",
        "/payload/status",
        "/payload/n",
        "/a",
        "/b/c",
        "/b/c/0",
        "/b/c/1",
        "/b/c/01",
        "/b/c/+0",
        "/b/c/-",
        "/a~1b",
        "/m~0n",
        "/~01",
        "/eé",
        "/n",
        "/u",
        "/f",
        "/g",
        "/e",
        "/neg",
        "/0",
        "/1",
        "/7/k/2",
        "/7/k/3",
        "/7/k/01",
        "/7/k/+1",
        "/nested/deeper/deepest/x",
        "/list/0/0/0",
        "type",
        "/missing",
        "/type/0",
    ];

    #[test]
    fn answers_as_serde_json_value_does() {
        for text in TEXTS {
            let mine = Json::parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(mine == value, "{text}");
            assert_eq!(mine.to_string(), value.to_string(), "{text}");
            for pointer in POINTERS {
                let (a, b) = (mine.pointer(pointer), value.pointer(pointer));
                assert_eq!(a.is_some(), b.is_some(), "{text} at {pointer:?}");
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(a == b, "{text} at {pointer:?}: {a} against {b}");
                    assert_eq!(a.to_string(), b.to_string(), "{text} at {pointer:?}");
                    assert_eq!(a.as_str(), b.as_str(), "{text} at {pointer:?}");
                }
            }
        }
    }

    #[test]
    fn a_large_object_with_repeated_names_answers_as_value_does() {
        // 3,000 members over 1,000 names, each name three times: the last one counts.
        let members: Vec<String> = (0..3_000)
            .map(|i| format!("\"k{}\":{i}", (i * 7) % 1_000))
            .collect();
        let text = format!("{{{}}}", members.join(","));
        let mine = Json::parse(&text).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(mine == value);
        assert_eq!(mine.to_string(), value.to_string());
        for name in ["/k0", "/k1", "/k999", "/k500"] {
            assert_eq!(
                mine.pointer(name).unwrap().to_string(),
                value[&name[1..]].to_string()
            );
        }
        let mut other = value.clone();
        other["k3"] = Value::from(-1);
        assert!(mine != other);
    }

    #[test]
    fn serde_json_s_raw_value_marker_is_an_ordinary_name() {
        let text = r#"{"x":{"$serde_json::private::RawValue":"5"}}"#;
        let frame = Json::parse(text).unwrap();
        assert_eq!(
            frame
                .pointer("/x/$serde_json::private::RawValue")
                .and_then(Json::as_str),
            Some("5")
        );
        assert_eq!(frame.to_string(), text);
    }

    #[test]
    fn borrows_strings_without_escapes() {
        let text = r#"{"type":"pong","esc":"a\nb"}"#;
        let frame = Json::parse(text).unwrap();
        let Json::Object(members) = &frame else {
            panic!("an object")
        };
        assert!(members.iter().all(|(k, _)| matches!(k, Cow::Borrowed(_))));
        assert!(matches!(
            frame.get("type"),
            Some(Json::String(Cow::Borrowed("pong")))
        ));
        assert!(matches!(frame.get("esc"), Some(Json::String(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn differs_where_value_differs() {
        let value: Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        for other in [
            r#"{"a":1}"#,
            r#"{"a":1,"b":[1,2],"c":null}"#,
            r#"{"a":1.0,"b":[1,2]}"#,
            r#"{"a":"1","b":[1,2]}"#,
            r#"{"a":1,"b":[2,1]}"#,
            r#"{"a":1,"b":[1,2],"b":[1]}"#,
            r#"[{"a":1,"b":[1,2]}]"#,
        ] {
            assert!(Json::parse(other).unwrap() != value, "{other}");
        }
        assert!(Json::parse(r#"{"b":[1,2],"a":1}"#).unwrap() == value);
        assert!(Json::parse(r#"{"a":0,"b":[1,2],"a":1}"#).unwrap() == value);
    }

    #[test]
    fn not_json_is_none() {
        for text in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "nul",
            "{\"a\":1} x",
            "\u{feff}{}",
        ] {
            assert!(Json::parse(text).is_none(), "{text:?}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Json::parse(&deep).is_none());
        assert!(serde_json::from_str::<Value>(&deep).is_err());
    }
}
