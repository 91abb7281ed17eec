//! Where the load goes: the target's URLs (one, or several instances addressed directly),
//! headers sent with every request, TLS, and the caps on what a session reads from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The service under test.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// HTTP base URL (`http://127.0.0.1:8080`), or a list of them (instances of the service
    /// addressed directly, behind no balancer: VU `i`, or arrival `i`, uses entry `i % n`);
    /// `--target` / `GAUNTLET_TARGET` override it (a comma-separated list for several).
    #[serde(default)]
    pub base_url: Option<Urls>,
    /// WebSocket URL, or a list of them (as many as `base_url` lists, or one); by default each
    /// `base_url` with `ws(s)://` and `ws_path`.
    #[serde(default)]
    pub ws_url: Option<Urls>,
    /// Path of the WebSocket endpoint when `ws_url` is derived from `base_url`.
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// Headers sent with every HTTP request and WebSocket upgrade.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings for `https://` and `wss://`.
    #[serde(default)]
    pub tls: Tls,
    /// Bound on TCP connect + TLS + upgrade of one connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// The largest HTTP response body a session reads, bytes; a larger one fails the session
    /// as `response_too_large` (a hostile or broken target cannot exhaust the worker).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// The largest WebSocket message (and frame) a session accepts, bytes; a larger one fails
    /// the session as `response_too_large`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            base_url: None,
            ws_url: None,
            ws_path: default_ws_path(),
            headers: BTreeMap::new(),
            tls: Tls::default(),
            connect_timeout: default_connect_timeout(),
            max_response_bytes: default_max_response_bytes(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

/// Most entries a URL list may have.
pub const MAX_URLS: usize = 1024;

/// One URL, or a list of them. Written as a string it stays a string (in the plan as the
/// workers and reports get it, and in error locations: `target.base_url`); written as a list,
/// each entry is located by its index (`target.base_url[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urls {
    /// `base_url = "http://a:8080"`.
    One(String),
    /// `base_url = ["http://a:8080", "http://b:8080"]`.
    Many(Vec<String>),
}

impl Urls {
    /// From the command line: a comma-separated list is several URLs, anything else one.
    pub fn from_flag(text: &str) -> Urls {
        if text.contains(',') {
            Urls::Many(
                text.split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect(),
            )
        } else {
            Urls::One(text.trim().to_owned())
        }
    }

    /// Every entry, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Urls::One(u) => std::slice::from_ref(u),
            Urls::Many(v) => v,
        }
    }

    /// Where entry `i` is in the plan: `field` for a single string, `field[i]` in a list.
    pub fn location(&self, field: &str, i: usize) -> String {
        match self {
            Urls::One(_) => field.to_owned(),
            Urls::Many(_) => format!("{field}[{i}]"),
        }
    }

    /// The same shape with every entry mapped.
    pub fn map(&self, mut f: impl FnMut(&str) -> String) -> Urls {
        match self {
            Urls::One(u) => Urls::One(f(u)),
            Urls::Many(v) => Urls::Many(v.iter().map(|u| f(u)).collect()),
        }
    }
}

impl std::fmt::Display for Urls {
    /// The entries, comma-separated (as `--target` takes them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_slice().join(","))
    }
}

impl Serialize for Urls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Urls::One(u) => s.serialize_str(u),
            Urls::Many(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Urls, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Urls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL or a list of URLs")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Urls, E> {
                Ok(Urls::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Urls, A::Error> {
                let mut out = Vec::new();
                while let Some(u) = seq.next_element::<String>()? {
                    if out.len() == MAX_URLS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_URLS} URLs"
                        )));
                    }
                    out.push(u);
                }
                Ok(Urls::Many(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Urls {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Urls".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One URL, or a list of URLs (VU or arrival `i` uses entry `i % n`).",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": MAX_URLS }
            ]
        })
    }
}

/// 256 KiB: far above an agent event, small enough that 1,000 sessions each holding a message
/// just under it cost a worker about 256 MiB (BENCHMARKS.md, hostile targets).
fn default_max_message_bytes() -> u64 {
    256 << 10
}

/// 256 KiB: far above an API answer of a chat backend; a session reads a body in chunks and
/// keeps at most this.
fn default_max_response_bytes() -> u64 {
    256 << 10
}

fn default_ws_path() -> String {
    "/ws".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// TLS options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Accept any server certificate (staging with self-signed certificates only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extra CA certificates (PEM) trusted besides the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}
