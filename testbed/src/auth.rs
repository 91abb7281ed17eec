//! Where a token is found on the upgrade request (Authorization header, then a `jwt.` subprotocol
//! entry, then `?token=`), and how it is validated (HS256 / RS256; `sub`, `exp`, `iat`, `jti`
//! required; `token_type == "access"`; issuer; allowed audiences; `iat` age and skew).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;
use crate::stats::RejectReason;

/// Subprotocol prefixes that carry a token, in the order they are looked for.
const SUBPROTOCOL_PREFIXES: [&str; 3] = ["jwt.", "jwt-auth.", "bearer."];

/// A token found on the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The JWT text.
    pub jwt: String,
    /// The subprotocol entry it came in, to echo back.
    pub subprotocol: Option<String>,
    /// Where it was found: "header", "subprotocol" or "query".
    pub placement: &'static str,
}

/// Looks for a token in the order the reference service does.
pub fn find_token(headers: &HeaderMap, query: Option<&str>) -> Option<FoundToken> {
    if let Some(jwt) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(FoundToken {
            jwt: jwt.to_owned(),
            subprotocol: None,
            placement: "header",
        });
    }
    let entries = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for entry in entries {
        for prefix in SUBPROTOCOL_PREFIXES {
            if let Some(encoded) = entry.strip_prefix(prefix) {
                return Some(FoundToken {
                    jwt: decode_subprotocol_token(encoded),
                    subprotocol: Some(entry.to_owned()),
                    placement: "subprotocol",
                });
            }
        }
    }
    let query = query?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        (!value.is_empty()).then(|| FoundToken {
            jwt: percent_decode(value),
            subprotocol: None,
            placement: "query",
        })
    })
}

/// `jwt.<base64url(jwt)>`; a raw JWT (which later versions accept) is kept as it is.
fn decode_subprotocol_token(encoded: &str) -> String {
    match URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) if text.matches('.').count() == 2 => text,
            _ => encoded.to_owned(),
        },
        Err(_) => encoded.to_owned(),
    }
}

/// Minimal `%XX` decoding for query values (JWTs are URL-safe, but clients may still escape).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The claims the service checks beyond signature, `exp` and `iss`.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    iat: Option<f64>,
    jti: Option<String>,
    token_type: Option<String>,
    aud: Option<Audience>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub sub: String,
}

/// Validates tokens against the configured keys and rules.
pub struct Validator {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: String,
    audiences: Vec<String>,
    max_age: Duration,
    max_skew: Duration,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Keys the testbed cannot validate tokens with.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The RSA public key file cannot be read.
    #[error("{}: cannot read the RSA public key: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no RSA public key.
    #[error("{}: not an RSA public key in PEM form: {source}", path.display())]
    NotRsa {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Neither a secret nor a public key.
    #[error("no JWT secret and no RSA public key: no token could ever be valid")]
    None,
}

impl Validator {
    /// Builds a validator; reads the RSA public key file if one is configured.
    pub fn new(config: &AuthConfig) -> Result<Validator, KeyError> {
        let rs256 = match &config.rsa_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(
                    DecodingKey::from_rsa_pem(&pem).map_err(|source| KeyError::NotRsa {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let hs256 = config
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(&s.0));
        if hs256.is_none() && rs256.is_none() {
            return Err(KeyError::None);
        }
        Ok(Validator {
            hs256,
            rs256,
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            max_age: config.max_token_age,
            max_skew: config.max_clock_skew,
        })
    }

    /// Checks `jwt` now.
    pub fn validate(&self, jwt: &str) -> Result<Identity, RejectReason> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| RejectReason::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or(RejectReason::UnsupportedAlgorithm)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        let claims = jsonwebtoken::decode::<Claims>(jwt, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => RejectReason::Expired,
                ErrorKind::InvalidIssuer => RejectReason::BadIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => RejectReason::BadIssuer,
                ErrorKind::MissingRequiredClaim(_) => RejectReason::MissingClaim,
                ErrorKind::InvalidSignature => RejectReason::BadSignature,
                ErrorKind::InvalidAlgorithm => RejectReason::UnsupportedAlgorithm,
                ErrorKind::Json(e) if e.is_data() => RejectReason::MissingClaim,
                _ => RejectReason::Malformed,
            })?
            .claims;
        let (Some(iat), Some(_jti)) = (claims.iat, claims.jti.as_ref()) else {
            return Err(RejectReason::MissingClaim);
        };
        if claims.token_type.as_deref() != Some("access") {
            return Err(RejectReason::BadTokenType);
        }
        if let Some(aud) = &claims.aud
            && !self.audiences.is_empty()
        {
            let allowed = |a: &String| self.audiences.contains(a);
            let ok = match aud {
                Audience::One(a) => allowed(a),
                Audience::Many(list) => list.iter().any(allowed),
            };
            if !ok {
                return Err(RejectReason::BadAudience);
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if now - iat > self.max_age.as_secs_f64() || iat - now > self.max_skew.as_secs_f64() {
            return Err(RejectReason::IatOutOfRange);
        }
        Ok(Identity { sub: claims.sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn header_wins_over_subprotocol_and_query() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer a.b.c"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("jwt.eC55Lno"),
        );
        let t = find_token(&h, Some("token=q.q.q")).unwrap();
        assert_eq!((t.jwt.as_str(), t.placement), ("a.b.c", "header"));
    }

    #[test]
    fn subprotocol_entry_is_decoded_and_echoed() {
        let mut h = HeaderMap::new();
        let entry = format!("jwt.{}", URL_SAFE_NO_PAD.encode("x.y.z"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("chat, {entry}")).unwrap(),
        );
        let t = find_token(&h, Some("token=q.q.q")).unwrap();
        assert_eq!(t.jwt, "x.y.z");
        assert_eq!(t.subprotocol.as_deref(), Some(entry.as_str()));
        let mut h = HeaderMap::new();
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("bearer.r.a.w"),
        );
        assert_eq!(find_token(&h, None).unwrap().jwt, "r.a.w");
    }

    #[test]
    fn query_token_is_last_and_percent_decoded() {
        let t = find_token(&HeaderMap::new(), Some("a=1&token=x%2Ey.z")).unwrap();
        assert_eq!((t.jwt.as_str(), t.placement), ("x.y.z", "query"));
        assert!(find_token(&HeaderMap::new(), Some("token=")).is_none());
        assert!(find_token(&HeaderMap::new(), None).is_none());
    }
}
