//! Where the load goes: the target's URLs, headers sent with every request, TLS, and the
//! caps on what a session reads from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The service under test.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// HTTP base URL (`http://127.0.0.1:8080`); `--target` / `GAUNTLET_TARGET` override it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// WebSocket URL; by default `base_url` with `ws(s)://` and `ws_path`.
    #[serde(default)]
    pub ws_url: Option<String>,
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
