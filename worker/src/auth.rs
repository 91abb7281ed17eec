//! JWT minting per virtual user: the key read from the worker's environment or files (never
//! from the plan), the subject chosen from the pool, claims rendered from templates.
//!
//! Who a token is for is an [`Identity`]: in the closed model VU `v`'s (subject
//! `v % subject_pool`), in the open model arrival `k`'s (subject `k % subject_pool`, see
//! `crate::session::Vu::take_arrival`).

use crate::error::CompileError;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gauntlet_core::plan::{Algorithm, Auth, KeySource, Placement, TokenPer};
use gauntlet_core::template::Template;
use hmac::{Hmac, Mac as _};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::render::{Context, JsonTemplate, Vars, compile, render, unix_now};
use crate::rng::Rng;

/// Who a token is minted for: the values of `{vu}`, `{iteration}`, `{subject}` and
/// `{subject_index}` in its claims (and `sub`, the subject).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// `{vu}`.
    pub vu: u64,
    /// `{iteration}`.
    pub iteration: u64,
    /// The subject (`sub`).
    pub subject: &'a str,
    /// The subject's number in the pool.
    pub subject_index: u64,
}

/// How tokens are signed.
enum Signer {
    /// HS256: the HMAC keyed once, cloned for each token (no key schedule, no allocation).
    Hs256(Hmac<Sha256>),
    /// RS256 and ES256: jsonwebtoken's signer.
    Key(EncodingKey),
}

/// A member of the claims, in the order a token writes them.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Sub,
    Iat,
    Exp,
    Jti,
    /// The plan's claim of that index.
    Claim(usize),
}

/// Mints the tokens of one plan.
///
/// A token is written straight into its string: the header's part is encoded once, the claims
/// are written as JSON into a per-thread buffer and encoded after it, and the signature last.
/// The bytes are those `jsonwebtoken::encode` gives for the same header and claims in a
/// `serde_json::Map` (a test compares them); the claims' order is the map's, worked out once.
pub struct Minter {
    alg: jsonwebtoken::Algorithm,
    /// The header's base64url part and the dot after it.
    head: String,
    signer: Signer,
    /// The claims' names as JSON (quoted, with the colon) and what each holds, in order.
    order: Vec<(String, Slot)>,
    subject: Template,
    claims: Vec<(String, JsonTemplate)>,
    lifetime: Duration,
    pool: Option<u64>,
    /// Where tokens travel.
    pub placement: Placement,
    /// Query parameter for `Placement::Query`.
    pub query_param: String,
    /// Subprotocol prefix for `Placement::Subprotocol`.
    pub subprotocol_prefix: String,
    /// Fresh per session or per VU.
    pub token_per: TokenPer,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.alg)
            .field("key", &"<redacted>")
            .field("subject", &self.subject.to_string())
            .finish_non_exhaustive()
    }
}

/// The largest key file read: a PEM private key is a few KiB.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// Reads a key file: a regular file of at most [`MAX_KEY_FILE`] bytes (never `/dev/zero`, a
/// pipe or a huge file read into memory).
fn read_key_file(path: &std::path::Path) -> Result<String, CompileError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("auth: cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("auth: cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(CompileError(format!(
            "auth: {} is not a regular file",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("auth: cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(CompileError(format!(
            "auth: {} is larger than {MAX_KEY_FILE} bytes: not a key",
            path.display()
        )));
    }
    Ok(text)
}

impl Minter {
    /// Reads the key and compiles the claims of a validated `[auth]`.
    pub fn new(auth: &Auth) -> Result<Minter, CompileError> {
        let read_env = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("auth: environment variable `{name}` is not set"))
        };
        let read_file = |path: &std::path::PathBuf| read_key_file(path);
        let material = match &auth.key {
            KeySource::SecretEnv(n) => read_env(n)?,
            KeySource::SecretFile(p) => read_file(p)?.trim_end_matches(['\n', '\r']).to_owned(),
            KeySource::KeyEnv(n) => read_env(n)?,
            KeySource::KeyFile(p) => read_file(p)?,
        };
        let (alg, signer) =
            match auth.algorithm {
                Algorithm::HS256 => {
                    if material.is_empty() {
                        return Err("auth: the HS256 secret is empty".into());
                    }
                    let mac = Hmac::<Sha256>::new_from_slice(material.as_bytes())
                        .map_err(|e| format!("auth: unusable HS256 secret: {e}"))?;
                    (jsonwebtoken::Algorithm::HS256, Signer::Hs256(mac))
                }
                Algorithm::RS256 => (
                    jsonwebtoken::Algorithm::RS256,
                    Signer::Key(
                        EncodingKey::from_rsa_pem(material.as_bytes())
                            .map_err(|e| format!("auth: not an RSA private key in PEM: {e}"))?,
                    ),
                ),
                Algorithm::ES256 => (
                    jsonwebtoken::Algorithm::ES256,
                    Signer::Key(EncodingKey::from_ec_pem(material.as_bytes()).map_err(|e| {
                        format!("auth: not a P-256 private key in PEM (PKCS#8): {e}")
                    })?),
                ),
            };
        let header = serde_json::to_vec(&Header::new(alg))
            .map_err(|e| format!("auth: cannot write the token header: {e}"))?;
        let mut head = URL_SAFE_NO_PAD.encode(header);
        head.push('.');
        let claims = auth
            .claims
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    JsonTemplate::compile(v).map_err(|e| format!("auth.claims.{k}: {e}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let minter = Minter {
            alg,
            head,
            signer,
            order: claim_order(&claims),
            subject: compile(&auth.subject).map_err(|e| format!("auth.subject: {e}"))?,
            claims,
            lifetime: auth.lifetime,
            pool: auth.subject_pool,
            placement: auth.placement,
            query_param: auth.query_param.clone(),
            subprotocol_prefix: auth.subprotocol_prefix.clone(),
            token_per: auth.token_per,
        };
        // Sign once now, so a key that cannot sign fails the run before any session.
        let vars = Vars::default();
        minter.mint(0, 0, &mut Rng::keyed(&[0]), &vars)?;
        Ok(minter)
    }

    /// The subject number of VU `vu` (closed model).
    pub fn subject_index(&self, vu: u64) -> u64 {
        self.pool.map_or(vu, |p| vu % p)
    }

    /// `subject_pool`, if the plan sets one.
    pub fn pool(&self) -> Option<u64> {
        self.pool
    }

    /// The subject of VU `vu` (closed model).
    pub fn subject(&self, vu: u64, rng: &mut Rng) -> String {
        self.render_subject(vu, self.subject_index(vu), rng)
    }

    /// The subject number `index` rendered for a session whose `{vu}` is `vu`.
    pub fn render_subject(&self, vu: u64, index: u64, rng: &mut Rng) -> String {
        let vars = Vars::default();
        let ctx = Context {
            vu,
            iteration: 0,
            subject: "",
            subject_index: index,
            scenario: "",
            token: "",
            vars: &vars,
        };
        render(&self.subject, &ctx, rng).unwrap_or_default()
    }

    /// How long a token lives.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for VU `vu` in its session `iteration` (closed model: the subject is VU
    /// `vu`'s).
    pub fn mint(
        &self,
        vu: u64,
        iteration: u64,
        rng: &mut Rng,
        vars: &Vars,
    ) -> Result<String, String> {
        let subject = self.subject(vu, rng);
        let who = Identity {
            vu,
            iteration,
            subject: &subject,
            subject_index: self.subject_index(vu),
        };
        self.mint_for(&who, rng, vars)
    }

    /// A token for `who`: `sub` is its subject, claims render with its values.
    pub fn mint_for(
        &self,
        who: &Identity<'_>,
        rng: &mut Rng,
        vars: &Vars,
    ) -> Result<String, String> {
        let ctx = Context {
            vu: who.vu,
            iteration: who.iteration,
            subject: who.subject,
            subject_index: who.subject_index,
            scenario: "",
            token: "",
            vars,
        };
        let now = unix_now().as_secs();
        let jti = rng.uuid_bytes();
        CLAIMS.with_borrow_mut(|json| {
            json.clear();
            json.push(b'{');
            for (i, (name, slot)) in self.order.iter().enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(name.as_bytes());
                match *slot {
                    Slot::Sub => write_json(json, &who.subject)?,
                    Slot::Iat => write_json(json, &now)?,
                    Slot::Exp => write_json(json, &(now + self.lifetime.as_secs()))?,
                    Slot::Jti => {
                        json.push(b'"');
                        json.extend_from_slice(&jti);
                        json.push(b'"');
                    }
                    Slot::Claim(k) => {
                        let (name, t) = &self.claims[k];
                        match t {
                            JsonTemplate::Fixed(text, _) => json.extend_from_slice(text.as_bytes()),
                            JsonTemplate::Dynamic(_) => {
                                let v = t
                                    .render_value(&ctx, rng)
                                    .ok_or_else(|| format!("auth.claims.{name}: cannot render"))?;
                                write_json(json, &v)?;
                            }
                        }
                    }
                }
            }
            json.push(b'}');
            // A capacity hint: HS256's signature is 43 characters of base64url.
            let signature = 43;
            let mut token =
                String::with_capacity(self.head.len() + json.len().div_ceil(3) * 4 + 1 + signature);
            token.push_str(&self.head);
            URL_SAFE_NO_PAD.encode_string(&json[..], &mut token);
            match &self.signer {
                Signer::Hs256(mac) => {
                    let mut mac = mac.clone();
                    mac.update(token.as_bytes());
                    let sum = mac.finalize().into_bytes();
                    token.push('.');
                    URL_SAFE_NO_PAD.encode_string(sum, &mut token);
                }
                Signer::Key(key) => {
                    let sum = jsonwebtoken::crypto::sign(token.as_bytes(), key, self.alg)
                        .map_err(|e| format!("auth: signing failed: {e}"))?;
                    token.push('.');
                    token.push_str(&sum);
                }
            }
            Ok(token)
        })
    }
}

thread_local! {
    /// The claims' JSON of the token being minted on this thread.
    static CLAIMS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends `value` as JSON.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    serde_json::to_writer(out, value).map_err(|e| format!("auth: cannot write the claims: {e}"))
}

/// The claims' names, as JSON with the colon after each, and what each holds, in the order a
/// `serde_json::Map` of them iterates (`sub`, `iat`, `exp` and `jti` first inserted, then the
/// plan's claims, a plan claim of the same name replacing the standard one).
fn claim_order(claims: &[(String, JsonTemplate)]) -> Vec<(String, Slot)> {
    let all: Vec<(&str, Slot)> = [
        ("sub", Slot::Sub),
        ("iat", Slot::Iat),
        ("exp", Slot::Exp),
        ("jti", Slot::Jti),
    ]
    .into_iter()
    .chain(
        claims
            .iter()
            .enumerate()
            .map(|(k, (name, _))| (name.as_str(), Slot::Claim(k))),
    )
    .collect();
    // The map keeps each name once, with the index of its last slot, in its own order.
    let mut map = Map::new();
    for (i, (name, _)) in all.iter().enumerate() {
        map.insert((*name).to_owned(), Value::from(i));
    }
    map.into_iter()
        .filter_map(|(name, i)| {
            let slot = all.get(usize::try_from(i.as_u64()?).ok()?)?.1;
            Some((format!("{}:", Value::String(name)), slot))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn auth(toml_text: &str) -> Auth {
        let spec: gauntlet_core::plan::AuthSpec = toml::from_str(toml_text).unwrap();
        spec.resolve().unwrap()
    }

    #[test]
    fn key_files_are_small_regular_files() {
        let e = read_key_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let big = std::env::temp_dir().join(format!("gauntlet-big-key-{}", std::process::id()));
        std::fs::write(&big, vec![b'k'; MAX_KEY_FILE as usize + 1]).unwrap();
        let e = read_key_file(&big).unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        std::fs::write(&big, "secret\n").unwrap();
        assert_eq!(read_key_file(&big).unwrap(), "secret\n");
        let _ = std::fs::remove_file(&big);
    }

    #[test]
    fn es256_tokens_verify_and_carry_rendered_claims() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let a = auth(&format!(
            "algorithm = \"ES256\"\nkey_file = \"{dir}/tests/fixtures/ec_private.pem\"\nsubject = \"u-{{subject_index}}\"\nsubject_pool = 3\nclaims = {{ iss = \"me\", vu = \"{{vu}}\", email = \"{{subject}}@x\", n = 7 }}"
        ));
        let m = Minter::new(&a).unwrap();
        let token = m
            .mint(7, 2, &mut Rng::keyed(&[1]), &Vars::default())
            .unwrap();
        let public = std::fs::read(format!("{dir}/tests/fixtures/ec_public.pem")).unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_issuer(&["me"]);
        let data =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_ec_pem(&public).unwrap(), &v)
                .unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], "u-1", "VU 7 maps to subject 7 % 3");
        assert_eq!(c["vu"], "7");
        assert_eq!(c["email"], "u-1@x");
        assert_eq!(c["n"], 7);
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 900);
        assert!(c["jti"].as_str().unwrap().len() == 36);
    }

    /// What `jsonwebtoken::encode` gives for the claims and header a token carries.
    fn encoded_again(token: &str, key: &EncodingKey) -> String {
        let part = |i: usize| {
            URL_SAFE_NO_PAD
                .decode(token.split('.').nth(i).unwrap())
                .unwrap()
        };
        let header: Header = serde_json::from_slice(&part(0)).unwrap();
        let claims: Map<String, Value> = serde_json::from_slice(&part(1)).unwrap();
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    /// The token VU `vu` got from the minter before it wrote tokens itself: a claims map
    /// signed by `jsonwebtoken::encode`, from the same random source (`iat` read off `token`).
    fn as_before(m: &Minter, vu: u64, token: &str, key: &EncodingKey) -> String {
        let part = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let now = serde_json::from_slice::<Value>(&part).unwrap()["iat"]
            .as_u64()
            .unwrap();
        let mut rng = Rng::keyed(&[vu]);
        let subject = m.subject(vu, &mut rng);
        let vars = Vars::default();
        let ctx = Context {
            vu,
            iteration: vu * 3,
            subject: &subject,
            subject_index: m.subject_index(vu),
            scenario: "",
            token: "",
            vars: &vars,
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(subject.clone()));
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + m.lifetime.as_secs()).into());
        claims.insert("jti".into(), Value::String(rng.uuid()));
        for (name, t) in &m.claims {
            claims.insert(name.clone(), t.render_value(&ctx, &mut rng).unwrap());
        }
        jsonwebtoken::encode(&Header::new(m.alg), &claims, key).unwrap()
    }

    #[test]
    fn tokens_are_the_bytes_jsonwebtoken_writes() {
        let secret = std::env::temp_dir().join(format!("gauntlet-mint-{}", std::process::id()));
        std::fs::write(&secret, "s3cret \u{e9}\n").unwrap();
        let claims = "claims = { aaa = \"{uuid}\", iss = \"me\", sub = \"over-{vu}\", jti = 5, \
                      \"q\\\"uote\" = \"{uuid}\", \
                      zz = { b = [1, \"x\\\"y\", 2.5], a = \"{subject}\" }, n = \"\\u0001\" }";
        let a = auth(&format!(
            "secret_file = \"{}\"\nsubject = \"u-\\\"{{subject_index}}\"\n{claims}",
            secret.display()
        ));
        let m = Minter::new(&a).unwrap();
        let _ = std::fs::remove_file(&secret);
        let key = EncodingKey::from_secret("s3cret \u{e9}".as_bytes());
        for vu in 0..20 {
            let token = m
                .mint(vu, vu * 3, &mut Rng::keyed(&[vu]), &Vars::default())
                .unwrap();
            assert_eq!(token, encoded_again(&token, &key));
            assert_eq!(
                token,
                as_before(&m, vu, &token, &key),
                "the same draws, the same bytes"
            );
            let claims: Map<String, Value> = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                claims["sub"],
                format!("over-{vu}"),
                "a plan claim replaces `sub`"
            );
            assert_eq!(claims["jti"], 5);
            assert_eq!(claims["zz"]["a"], format!("u-\"{vu}"));
            assert_eq!(claims["aaa"].as_str().unwrap().len(), 36);
        }
        let dir = env!("CARGO_MANIFEST_DIR");
        let a = auth(&format!(
            "algorithm = \"ES256\"\nkey_file = \"{dir}/tests/fixtures/ec_private.pem\"\n{claims}"
        ));
        let m = Minter::new(&a).unwrap();
        let pem = std::fs::read(format!("{dir}/tests/fixtures/ec_private.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        let token = m
            .mint(4, 12, &mut Rng::keyed(&[4]), &Vars::default())
            .unwrap();
        assert_eq!(token, encoded_again(&token, &key));
        assert_eq!(token, as_before(&m, 4, &token, &key));
        // RS256 (PKCS#1 v1.5 signatures are deterministic too).
        let a = auth(&format!(
            "algorithm = \"RS256\"\nkey_file = \"{dir}/tests/fixtures/rsa_private.pem\"\n{claims}"
        ));
        let m = Minter::new(&a).unwrap();
        let pem = std::fs::read(format!("{dir}/tests/fixtures/rsa_private.pem")).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        for vu in 0..3 {
            let token = m
                .mint(vu, vu * 3, &mut Rng::keyed(&[vu]), &Vars::default())
                .unwrap();
            assert_eq!(token, encoded_again(&token, &key));
            assert_eq!(token, as_before(&m, vu, &token, &key));
        }
    }

    #[test]
    fn key_problems_are_named() {
        let e = Minter::new(&auth("secret_env = \"GAUNTLET_TEST_SURELY_UNSET\"")).unwrap_err();
        assert!(e.contains("GAUNTLET_TEST_SURELY_UNSET"), "{e}");
        let dir = env!("CARGO_MANIFEST_DIR");
        let e = Minter::new(&auth(&format!(
            "algorithm = \"RS256\"\nkey_file = \"{dir}/tests/fixtures/ec_private.pem\""
        )))
        .unwrap_err();
        assert!(e.contains("not an RSA private key"), "{e}");
        let e = Minter::new(&auth(
            "algorithm = \"RS256\"\nkey_file = \"/nonexistent/key.pem\"",
        ))
        .unwrap_err();
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
    }
}
