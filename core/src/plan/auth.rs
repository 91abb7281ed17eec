//! How virtual users get their JWTs: the algorithm, where the key comes from, where the token
//! travels, its lifetime and claims, and how many distinct subjects sessions share.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JWT signing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with a PEM private key.
    RS256,
    /// ECDSA P-256 SHA-256 with a PEM private key.
    ES256,
}

/// Where the token travels on the WebSocket upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `Authorization: Bearer <jwt>`.
    #[default]
    Header,
    /// A `Sec-WebSocket-Protocol` entry `<prefix><base64url(jwt)>`.
    Subprotocol,
    /// `?<query_param>=<jwt>`.
    Query,
}

/// When a VU gets a new token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPer {
    /// A fresh token for every session.
    #[default]
    Session,
    /// One token per VU for the whole run (re-minted when it nears expiry); in the open model
    /// one per subject on each worker.
    Vu,
}

/// JWT minting, as the plan file writes it (`[auth]`).
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Signing algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Environment variable holding the HS256 secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HS256 secret (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the RS256/ES256 private key (PEM).
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding the RS256/ES256 private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Where the token goes on the upgrade.
    #[serde(default)]
    pub placement: Placement,
    /// Query parameter name for `placement = "query"`.
    #[serde(default = "default_query_param")]
    pub query_param: String,
    /// Subprotocol prefix for `placement = "subprotocol"`.
    #[serde(default = "default_subprotocol_prefix")]
    pub subprotocol_prefix: String,
    /// Token lifetime (`exp - iat`).
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lifetime: Duration,
    /// A fresh token per session or per VU.
    #[serde(default)]
    pub token_per: TokenPer,
    /// The JWT subject of subject number `{subject_index}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// How many distinct subjects the sessions map onto: closed model, VU `v` gets subject
    /// `v % pool`; open model, arrival `k` (fleet-wide) gets subject `k % pool`. Unset gives
    /// every VU its own subject (open model: `k % max_vus`).
    #[serde(default)]
    pub subject_pool: Option<u64>,
    /// Claims; string values are templates. `sub`, `iat`, `exp` and `jti` are added unless set.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
}

fn default_query_param() -> String {
    "token".into()
}
fn default_subprotocol_prefix() -> String {
    "jwt.".into()
}
fn default_lifetime() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_subject() -> String {
    "gauntlet-user-{subject_index}".into()
}

/// Where the signing key comes from: exactly one source, matching the algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// HS256: the secret in this environment variable (of the worker).
    SecretEnv(String),
    /// HS256: the secret in this file (trailing newline ignored).
    SecretFile(PathBuf),
    /// RS256/ES256: the PEM private key in this environment variable.
    KeyEnv(String),
    /// RS256/ES256: the PEM private key in this file.
    KeyFile(PathBuf),
}

impl KeySource {
    /// The environment variable it reads, if it reads one.
    pub fn env(&self) -> Option<&str> {
        match self {
            KeySource::SecretEnv(n) | KeySource::KeyEnv(n) => Some(n),
            _ => None,
        }
    }

    /// The file it reads, if it reads one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            KeySource::SecretFile(p) | KeySource::KeyFile(p) => Some(p),
            _ => None,
        }
    }
}

/// JWT minting, resolved: one key source.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Auth {
    /// Signing algorithm.
    pub algorithm: Algorithm,
    /// Where the key comes from.
    pub key: KeySource,
    /// Where the token goes on the upgrade.
    pub placement: Placement,
    /// Query parameter name for `placement = "query"`.
    pub query_param: String,
    /// Subprotocol prefix for `placement = "subprotocol"`.
    pub subprotocol_prefix: String,
    /// Token lifetime (`exp - iat`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lifetime: Duration,
    /// A fresh token per session or per VU.
    pub token_per: TokenPer,
    /// The JWT subject of subject number `{subject_index}`.
    pub subject: String,
    /// How many distinct subjects the sessions map onto (see [`AuthSpec::subject_pool`]).
    pub subject_pool: Option<u64>,
    /// Claims; string values are templates.
    pub claims: BTreeMap<String, Value>,
}

impl AuthSpec {
    /// The resolved settings; `None` unless exactly one key source is given (validation
    /// checks that it also matches the algorithm).
    pub fn resolve(&self) -> Option<Auth> {
        let key = match (
            &self.secret_env,
            &self.secret_file,
            &self.key_env,
            &self.key_file,
        ) {
            (Some(n), None, None, None) => KeySource::SecretEnv(n.clone()),
            (None, Some(p), None, None) => KeySource::SecretFile(p.clone()),
            (None, None, Some(n), None) => KeySource::KeyEnv(n.clone()),
            (None, None, None, Some(p)) => KeySource::KeyFile(p.clone()),
            _ => return None,
        };
        Some(Auth {
            algorithm: self.algorithm,
            key,
            placement: self.placement,
            query_param: self.query_param.clone(),
            subprotocol_prefix: self.subprotocol_prefix.clone(),
            lifetime: self.lifetime,
            token_per: self.token_per,
            subject: self.subject.clone(),
            subject_pool: self.subject_pool,
            claims: self.claims.clone(),
        })
    }
}
