//! The testbed's settings: a TOML file (`--config`), overridden by CLI flags. Defaults mirror
//! the reference service: issuer `netra-auth-service`, HS256 secret from `JWT_SECRET_KEY`,
//! 20 managers per user, `accept-then-close` rejection, `system_message` confirmation, no faults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gauntlet_core::config_file::{self, ConfigError, Located};
use gauntlet_core::units::Rate;
use serde::{Deserialize, Serialize};

use crate::delay::Delay;
use crate::faults::Faults;
pub use crate::protocol::{ConfirmationShape, EventShape};

/// Everything the testbed can be told.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestbedConfig {
    /// Seed of every random draw (faults, delays): the same seed and workload inject the same
    /// faults every time.
    pub seed: u64,
    /// Token validation.
    pub auth: AuthConfig,
    /// WebSocket behaviour and limits.
    pub websocket: WebSocketConfig,
    /// The agent pipeline's events.
    pub pipeline: PipelineConfig,
    /// HTTP endpoints.
    pub http: HttpConfig,
    /// Fault switches; all off by default. Changeable at run time via `PUT /__testbed/faults`.
    pub faults: Faults,
}

/// How a rejected token is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectionMode {
    /// Accept the upgrade, send an `error_message` frame, close 1008 "SSOT Auth failed".
    #[default]
    AcceptThenClose,
    /// Answer the upgrade request with an HTTP error (403 unless `handshake_status` says 401).
    RejectHandshake,
}

/// JWT validation settings. The secret itself never lives in a file that describes the run:
/// it comes from `secret_env` or `secret_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Allowed `aud` values; a token without `aud` is accepted, one with another is not.
    /// Empty: any audience.
    pub audiences: Vec<String>,
    /// Environment variable holding the HS256 secret.
    pub secret_env: String,
    /// File holding the HS256 secret (wins over `secret_env`); surrounding whitespace is trimmed.
    pub secret_file: Option<PathBuf>,
    /// PEM file with an RSA public key: RS256 tokens are accepted when set.
    pub rsa_public_key_file: Option<PathBuf>,
    /// How rejected tokens are answered.
    pub rejection: RejectionMode,
    /// HTTP status of a handshake rejection (401 or 403).
    pub handshake_status: u16,
    /// Oldest accepted `iat`.
    #[serde(with = "humantime_serde")]
    pub max_token_age: Duration,
    /// Largest accepted `iat` in the future.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// The resolved HS256 secret (never serialized).
    #[serde(skip)]
    pub secret: Option<Secret>,
}

/// A secret's bytes; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "netra-auth-service".into(),
            audiences: Vec::new(),
            secret_env: "JWT_SECRET_KEY".into(),
            secret_file: None,
            rsa_public_key_file: None,
            rejection: RejectionMode::default(),
            handshake_status: 403,
            max_token_age: Duration::from_secs(24 * 3600),
            max_clock_skew: Duration::from_secs(60),
            secret: None,
        }
    }
}

/// WebSocket behaviour and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Confirmation frame shape.
    pub confirmation: ConfirmationShape,
    /// Agent event frame shape.
    pub event_shape: EventShape,
    /// Text frames longer than this are silently dropped, as the reference service does.
    pub max_frame_bytes: usize,
    /// Hard cap on one incoming message; a larger one closes the connection (1009), so a client
    /// can never make the testbed buffer without bound.
    pub max_message_bytes: usize,
    /// Live managers one user may hold at once (the reference used 5, later 20).
    pub max_managers_per_user: usize,
    /// Fraction of the limit at which emergency cleanup runs before a new manager is made.
    pub cleanup_threshold: Rate,
    /// A manager with no frame for this long counts as inactive for emergency cleanup.
    #[serde(with = "humantime_serde")]
    pub manager_idle: Duration,
    /// Interval of server WebSocket pings (uvicorn's default is 20 s); 0 turns them off.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A connection that has not answered a ping within this time is closed 1011.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// A frame the client does not take within this time (it never reads) ends the connection.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// tungstenite read buffer per connection; small buffers keep idle connections cheap.
    pub read_buffer_bytes: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            confirmation: ConfirmationShape::default(),
            event_shape: EventShape::default(),
            max_frame_bytes: 8192,
            max_message_bytes: 1 << 20,
            max_managers_per_user: 20,
            cleanup_threshold: Rate::new(0.7).unwrap_or(Rate::ONE),
            manager_idle: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            read_buffer_bytes: 4096,
        }
    }
}

/// The agent pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Gap before each of the five events.
    pub delay: Delay,
    /// `agent_name` in event frames.
    pub agent_name: String,
    /// At most this many agent runs in progress across the whole testbed; further runs wait,
    /// in arrival order, before `agent_started`. 0: unlimited. See [`crate::capacity`].
    pub concurrency: usize,
}

/// The largest `pipeline.concurrency`.
pub const MAX_CONCURRENCY: usize = 1_000_000;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            delay: Delay::LogNormal {
                median: Duration::from_millis(20),
                p99: Duration::from_millis(200),
            },
            agent_name: "supervisor".into(),
            concurrency: 0,
        }
    }
}

/// HTTP endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `/health` answers 503 "unhealthy" (and WebSockets close 1011 "Service not ready") for
    /// this long after start.
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// `service` in health answers.
    pub service: String,
    /// `version` in health answers.
    pub version: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            warmup: Duration::ZERO,
            service: "netra-backend".into(),
            version: "1.0.0".into(),
        }
    }
}

/// The testbed's HS256 secret cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file cannot be read.
    #[error("{}: cannot read the JWT secret: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret file is empty.
    #[error("{}: the JWT secret file is empty", .0.display())]
    Empty(PathBuf),
    /// No secret anywhere (the variable named is not set).
    #[error(
        "no JWT secret: set the environment variable {0} or pass --jwt-secret-file (or configure auth.rsa_public_key_file for RS256 only)"
    )]
    None(String),
}

impl TestbedConfig {
    /// Reads a config file; every problem is reported as `file:line:col: field: message`.
    pub fn load(path: &Path) -> Result<TestbedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = path.display().to_string();
        let config: TestbedConfig = config_file::parse(&file, &text)?;
        config.validate(&file, &text)?;
        Ok(config)
    }

    /// Checks rules that span fields; `text` locates the offending line.
    pub fn validate(&self, file: &str, text: &str) -> Result<(), Located> {
        let err = |table: &str, key: &str, msg: String| {
            Err(config_file::locate_key(file, text, table, key, msg))
        };
        if !matches!(self.auth.handshake_status, 401 | 403) {
            return err(
                "auth",
                "handshake_status",
                format!("must be 401 or 403 (got {})", self.auth.handshake_status),
            );
        }
        if self.websocket.max_managers_per_user == 0 {
            return err(
                "websocket",
                "max_managers_per_user",
                "must be at least 1".into(),
            );
        }
        if self.websocket.max_frame_bytes > self.websocket.max_message_bytes {
            return err(
                "websocket",
                "max_frame_bytes",
                "must not exceed max_message_bytes".into(),
            );
        }
        if self.websocket.read_buffer_bytes < 256 {
            return err(
                "websocket",
                "read_buffer_bytes",
                "must be at least 256".into(),
            );
        }
        if self.pipeline.concurrency > MAX_CONCURRENCY {
            return err(
                "pipeline",
                "concurrency",
                format!("must be at most {MAX_CONCURRENCY} (0: unlimited)"),
            );
        }
        if let Err(msg) = self.pipeline.delay.check() {
            return err("pipeline", "delay", msg);
        }
        if let Err((kind, msg)) = self.faults.check() {
            return err(&format!("faults.{kind}"), "", msg);
        }
        Ok(())
    }

    /// Resolves the HS256 secret from `secret_file` or `secret_env` unless one is already set.
    /// Having neither a secret nor an RSA key is an error: no token could ever pass.
    pub fn resolve_secret(&mut self) -> Result<(), SecretError> {
        if self.auth.secret.is_some() {
            return Ok(());
        }
        if let Some(path) = &self.auth.secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                path: path.clone(),
                source,
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(SecretError::Empty(path.clone()));
            }
            self.auth.secret = Some(Secret(secret.as_bytes().to_vec()));
            return Ok(());
        }
        match std::env::var(&self.auth.secret_env) {
            Ok(value) if !value.is_empty() => {
                self.auth.secret = Some(Secret(value.into_bytes()));
                Ok(())
            }
            _ if self.auth.rsa_public_key_file.is_some() => Ok(()),
            _ => Err(SecretError::None(self.auth.secret_env.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_mirror_the_reference() {
        let c = TestbedConfig::default();
        assert_eq!(c.auth.issuer, "netra-auth-service");
        assert_eq!(c.auth.secret_env, "JWT_SECRET_KEY");
        assert_eq!(c.websocket.max_managers_per_user, 20);
        assert_eq!(c.auth.rejection, RejectionMode::AcceptThenClose);
        assert_eq!(c.websocket.confirmation, ConfirmationShape::SystemMessage);
        assert_eq!(c.websocket.max_frame_bytes, 8192);
        assert_eq!(c.pipeline.concurrency, 0, "unlimited by default");
        assert!(c.faults.is_empty());
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
seed = 7
[auth]
issuer = "me"
rejection = "reject-handshake"
max_token_age = "1h"
[websocket]
confirmation = "connection_established"
max_managers_per_user = 5
[pipeline]
delay = { kind = "uniform", min = "1ms", max = "5ms" }
concurrency = 8
[faults.factory_init]
rate = 0.5
users = { suffix_mod = 4, suffix_rem = [0, 1] }
[faults.missing_event]
rate = 1.0
event = "tool_completed"
"#;
        let c: TestbedConfig = config_file::parse("t.toml", text).unwrap();
        c.validate("t.toml", text).unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.auth.rejection, RejectionMode::RejectHandshake);
        assert_eq!(c.websocket.max_managers_per_user, 5);
        assert_eq!(c.pipeline.concurrency, 8);
        assert!(c.faults.factory_init.is_some());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text = "[websocket]\nmax_managers_per_user = \"lots\"\n";
        let e = config_file::parse::<TestbedConfig>("t.toml", text).unwrap_err();
        assert_eq!(e.field, "websocket.max_managers_per_user");
        assert_eq!(e.line, 2);

        let text = "[faults.auth_reject]\nrate = 3\n";
        let e = config_file::parse::<TestbedConfig>("t.toml", text).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("faults.auth_reject.rate", 2));

        let text = "[auth]\nissuer = \"x\"\nhandshake_status = 500\n";
        let c: TestbedConfig = config_file::parse("t.toml", text).unwrap();
        let e = c.validate("t.toml", text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:3:1: auth.handshake_status: must be 401 or 403 (got 500)"
        );

        let text = "[pipeline]\nconcurrency = 1000001\n";
        let c: TestbedConfig = config_file::parse("t.toml", text).unwrap();
        let e = c.validate("t.toml", text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:2:1: pipeline.concurrency: must be at most 1000000 (0: unlimited)"
        );

        let text = "[pipeline]\ndelay = { kind = \"gamma\" }\n";
        let e = config_file::parse::<TestbedConfig>("t.toml", text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
