//! Redaction: the one place that decides what a credential looks like and masks it as
//! `<redacted>`, for everything gauntlet shows, stores or logs (a plan in the history, the
//! target URL `validate` and `run` print, failure samples in reports, log lines).
//!
//! # What is a secret
//! - **By name** ([`is_secret_name`]): a header, query parameter, TOML key or `name=value`
//!   field whose name contains (case-insensitive) `auth`, `key`, `token`, `secret`,
//!   `password`, `passwd`, `cookie`, `session`, `credential` or `signature`.
//! - **By shape**, whatever its name: a JWT (`eyJ….eyJ….sig`, also cut after its payload) or a
//!   JWT in base64 (`ZXlK…`, as the subprotocol placement sends it), the credentials of
//!   `Bearer <token>` and `Basic <base64>`, and a URL's user-info (`https://user:pass@host`).
//!
//! Plans never hold signing keys (those stay in the worker's environment or files), but a
//! header, a query parameter or a URL may carry a literal credential, and a target may echo a
//! token back in a frame, a body or a close reason.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a masked value becomes.
pub const MASK: &str = "<redacted>";

/// Name parts that make a name secret (lower case).
const SECRET_WORDS: [&str; 10] = [
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "cookie",
    "session",
    "credential",
    "signature",
];

/// Names that contain a secret word but never hold a secret (compared in lower case):
/// - `secret_env`, `secret_file`, `key_env`, `key_file` (`[auth]`): they name *where* the
///   signing secret or key lives (an environment variable, a file), which a reader of a stored
///   plan needs to know; the secret itself is never in the plan.
/// - `token_per` (`[auth]`): `session` or `vu`, how often a token is minted.
/// - `token_type`: the OAuth / JWT claim naming the kind of token (`access`, `Bearer`), public.
/// - `sessions`: a count (reports, `gauntlet` log fields), never a session id.
/// - `authority`: the HTTP/2 `:authority` (the host), as HTTP clients log it.
///
/// Every other field of a plan was checked (`core/src/plan.rs`, `core/src/thresholds.rs`): the
/// only one whose name contains a secret word is `auth`, which is the `[auth]` table (kept and
/// walked: its own keys are judged one by one) or the `auth = true|false` switch of a
/// `ws_connect` or `http` step (booleans are never masked). `subject`, `subject_pool`,
/// `query_param` (the *name* of the token's query parameter, `token` by default),
/// `subprotocol_prefix`, `placement`, `claims`, `vars`, `capture`... contain no secret word
/// and stay visible; the values inside `claims`, `vars`, `headers` and `query` are judged by
/// their own names.
const VISIBLE_NAMES: [&str; 8] = [
    "secret_env",
    "secret_file",
    "key_env",
    "key_file",
    "token_per",
    "token_type",
    "sessions",
    "authority",
];

/// Whether a header, query parameter, TOML key or `name=value` field named `name` holds a
/// secret: its name contains, in any case, one of `auth`, `key`, `token`, `secret`,
/// `password`, `passwd`, `cookie`, `session`, `credential`, `signature` (so `Authorization`,
/// `X-Auth`, `Api-Key`, `X-API-KEY`, `Ocp-Apim-Subscription-Key`, `access_key`, `apikey`,
/// `Set-Cookie`, `X-Session-Id`, `client_secret`, `X-Amz-Signature`...), unless it is one of
/// the names that only *point* at a secret or name something public: `secret_env`,
/// `secret_file`, `key_env`, `key_file`, `token_per`, `token_type`, `sessions`, `authority`
/// (see the module's source for why each).
///
/// A name matches by substring, so a few harmless names are masked too (`Sec-WebSocket-Key`,
/// a nonce; `author`; `monkey`): masking too much costs a value in a log line, too little
/// costs a credential.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.trim_start_matches(':').to_ascii_lowercase();
    !VISIBLE_NAMES.contains(&lower.as_str()) && SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// `text` with its credentials masked when it is a URL (`scheme://…`, or a path with a query
/// such as `/api/items?api_key=…`): user-info (`https://user:pass@host/` becomes
/// `https://<redacted>@host/`), the values of query (and fragment) parameters whose names are
/// secret ([`is_secret_name`], the name percent-decoded first), and JWT-shaped values. Anything
/// that is not a URL is returned unchanged.
pub fn url(text: &str) -> String {
    let (head, rest) = match scheme_len(text) {
        Some(n) => {
            let after = &text[n..];
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = &after[..end];
            let authority = match authority.rfind('@') {
                Some(at) => format!("{MASK}{}", &authority[at..]),
                None => authority.to_owned(),
            };
            (format!("{}{authority}", &text[..n]), &after[end..])
        }
        None if text.starts_with('/') && text.contains(['?', '#']) => (String::new(), text),
        None => return text.to_owned(),
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = head;
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&mask_query(q));
    }
    if let Some(f) = fragment {
        // OAuth's implicit flow puts `access_token=…` in the fragment.
        out.push('#');
        out.push_str(&mask_query(f));
    }
    tokens(&out)
}

/// Free text (a failure sample, a close reason, a response body, a log line) with its
/// credentials masked: JWT-shaped strings (also base64-encoded, and cut after the payload),
/// the credentials of `Bearer <token>` and `Basic <base64>`, URL user-info, and the values of
/// fields whose names are secret ([`is_secret_name`]): `name=value` (query strings, cookies,
/// log fields), `"name": value` and `name: "value"` (JSON, debug output), and `Name: value` at
/// the start of a line (an HTTP header, to the end of the line).
///
/// `name: value` elsewhere in a line is left alone: gauntlet's own messages say
/// `field: what is wrong` and `expect <type>: <condition>`, which name no secret. Cheap: the
/// patterns are compiled once, and the text is scanned a few times in linear time.
pub fn text(s: &str) -> String {
    pairs(&tokens(s), true)
}

/// A gauntlet error or status message (a plan error, a worker's reason for not running its
/// share) with its credentials masked: like [`text`], but without the `Name: value` header
/// form at the start of a line, which in these messages is a location (`auth: a secret is
/// needed`), not a credential.
pub fn message(s: &str) -> String {
    pairs(&tokens(s), false)
}

/// A plan (TOML) as the history stores it: the values of secret-named keys anywhere
/// ([`is_secret_name`]; headers, `ws_connect.query`, `claims`, `vars`, a frame's JSON...)
/// become `<redacted>`, and so does everything nested under such a key (an array, a table:
/// except the plan's top-level `[auth]` table, whose keys are judged one by one); booleans
/// stay (`auth = true` is a switch). Every other string goes through [`url`] (user-info,
/// secret query parameters of `base_url`, `ws_url`, an `http` step's absolute URL or query)
/// and loses JWT-shaped and `Bearer` / `Basic` credentials. Text that is not TOML (never
/// the case for a plan that loaded) gives an empty string: nothing rather than a leak.
pub fn plan_toml(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(mut table) => {
            for (k, v) in table.iter_mut() {
                plan_value(v, k != "auth" && is_secret_name(k));
            }
            toml::to_string(&table).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

fn plan_value(v: &mut toml::Value, secret: bool) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                plan_value(v, secret || is_secret_name(k));
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| plan_value(v, secret)),
        toml::Value::Boolean(_) => {}
        _ if secret => *v = toml::Value::String(MASK.into()),
        toml::Value::String(s) => {
            let masked = url(s);
            let masked = tokens(&masked);
            if masked != *s {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// Length of `scheme://` at the start of `text`, if it starts with one.
fn scheme_len(text: &str) -> Option<usize> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some(scheme.len() + 3)
}

/// A query string (`a=1&access_key=…`) with the values of secret-named parameters masked.
fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, value)) if value != MASK && is_secret_name(&percent_decode(name)) => {
                format!("{name}={MASK}")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` escapes and `+` decoded (invalid escapes kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants, exercised by the tests below.
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("redaction pattern {pattern}: {e}"))
}

/// A JWT: header and payload start with `eyJ` (base64url of `{"`); the signature may be
/// missing when the text was cut after the payload.
static JWT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"));
/// A JWT in base64 or base64url (`jwt.<base64url(jwt)>` in `Sec-WebSocket-Protocol`).
static JWT_B64: LazyLock<Regex> = LazyLock::new(|| regex(r"ZXlK[A-Za-z0-9_+/-]{30,}=*"));
/// `Bearer <token>` / `Basic <base64>` (any case).
static SCHEME: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b(bearer|basic)([ \t]+)([A-Za-z0-9._~+/=-]+)"));
/// `scheme://user-info@`.
static USER_INFO: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[A-Za-z0-9._~%!$&()*+,;=:-]+@"));
/// A name containing a secret word (judged by [`is_secret_name`] before its value is masked).
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "(?i)[A-Za-z0-9_.-]*(?:{})[A-Za-z0-9_.-]*",
        SECRET_WORDS.join("|")
    ))
});

/// Credentials recognised by their shape, whatever their name.
fn tokens(s: &str) -> String {
    let s = USER_INFO.replace_all(s, |c: &Captures<'_>| format!("{}{MASK}@", &c[1]));
    let s = JWT.replace_all(&s, MASK);
    let s = JWT_B64.replace_all(&s, MASK);
    SCHEME
        .replace_all(&s, |c: &Captures<'_>| {
            let credential = &c[3];
            let looks = if c[1].eq_ignore_ascii_case("basic") {
                looks_base64(credential)
            } else {
                looks_opaque(credential)
            };
            if looks {
                format!("{}{}{MASK}", &c[1], &c[2])
            } else {
                c[0].to_owned()
            }
        })
        .into_owned()
}

/// A bearer token rather than a word: long, or with a digit or punctuation.
fn looks_opaque(t: &str) -> bool {
    t.len() >= 8 || t.bytes().any(|c| !c.is_ascii_alphabetic())
}

/// `user:pass` in base64 rather than a word (`Basic realm=…`, `basic auth`): at least 8
/// characters with a digit, `+`, `/`, `=` or a capital after the first character.
fn looks_base64(t: &str) -> bool {
    t.len() >= 8
        && t.bytes().skip(1).any(|c| {
            c.is_ascii_digit() || c.is_ascii_uppercase() || matches!(c, b'+' | b'/' | b'=')
        })
}

/// Masks the values of secret-named fields (see [`text`]); `headers` also masks `Name: value`
/// at the start of a line.
fn pairs(s: &str, headers: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for m in NAME.find_iter(s) {
        if m.start() < last {
            continue;
        }
        let start = name_start(s, m.start(), m.end());
        if !is_secret_name(&s[start..m.end()]) {
            continue;
        }
        let Some(field) = field_value(s, start, m.end(), headers) else {
            continue;
        };
        out.push_str(&s[last..field.start]);
        out.push_str(&field.quote);
        out.push_str(MASK);
        out.push_str(&field.quote);
        last = field.end;
    }
    if last == 0 {
        return s.to_owned();
    }
    out.push_str(&s[last..]);
    out
}

/// Where a name really starts: past the letter of a backslash escape (`\r\nX-Auth` in debug
/// output matches as `nX-Auth`) and past a terminal colour code (`\x1b[3mtoken`).
fn name_start(s: &str, mut start: usize, end: usize) -> usize {
    let b = s.as_bytes();
    if start > 0 && b[start - 1] == b'\\' && start < end {
        start += 1;
    }
    if start >= 2 && &b[start - 2..start] == b"\x1b[" {
        let mut i = start;
        while i < end && (b[i].is_ascii_digit() || b[i] == b';') {
            i += 1;
        }
        if i < end && b[i] == b'm' {
            start = i + 1;
        }
    }
    start
}

/// The value of a field found after its name.
struct Field {
    start: usize,
    end: usize,
    /// Quotes to wrap the mask in: an unquoted JSON value (`"session": 42`) becomes a string
    /// so JSON stays JSON.
    quote: String,
}

/// Skips colour codes, backslashes and quotes from `i`; returns the new position and the
/// quote characters (with their backslashes) seen.
fn skip_wrappers(b: &[u8], mut i: usize) -> (usize, String) {
    let mut quote = String::new();
    while i < b.len() {
        match b[i] {
            0x1b if b.get(i + 1) == Some(&b'[') => {
                let mut j = i + 2;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';') {
                    j += 1;
                }
                if b.get(j) != Some(&b'm') {
                    break;
                }
                i = j + 1;
            }
            c @ (b'\\' | b'"' | b'\'') => {
                quote.push(c as char);
                i += 1;
            }
            _ => break,
        }
    }
    if !quote.contains(['"', '\'']) {
        quote.clear();
    }
    (i, quote)
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Whether `start` begins a line (the text's start, a newline, or a `\n` / `\r` escape), past
/// blanks.
fn at_line_start(b: &[u8], start: usize) -> bool {
    let mut i = start;
    while i > 0 && matches!(b[i - 1], b' ' | b'\t') {
        i -= 1;
    }
    i == 0
        || matches!(b[i - 1], b'\n' | b'\r')
        || (i >= 2 && b[i - 2] == b'\\' && matches!(b[i - 1], b'n' | b'r'))
}

fn field_value(s: &str, name_start: usize, name_end: usize, headers: bool) -> Option<Field> {
    let b = s.as_bytes();
    let (i, key_quote) = skip_wrappers(b, name_end);
    let i = skip_blanks(b, i);
    let sep = *b.get(i)?;
    if !matches!(sep, b':' | b'=') || b.get(i + 1) == Some(&sep) {
        return None; // `::` (a Rust path), `==` (a comparison)
    }
    let mut i = skip_blanks(b, i + 1);
    if s[i..].starts_with("Some(") {
        i += 5;
    }
    let (i, value_quote) = skip_wrappers(b, i);
    let quoted = !value_quote.is_empty();
    let json_key = !key_quote.is_empty();
    let stop: fn(u8) -> bool = if quoted {
        |c| matches!(c, b'"' | b'\'' | b'\\' | b'\r' | b'\n')
    } else if sep == b'=' {
        |c| {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    b'"' | b'\''
                        | b'`'
                        | b'\\'
                        | b'&'
                        | b';'
                        | b','
                        | b'<'
                        | b'>'
                        | b')'
                        | b'}'
                        | b']'
                        | 0x1b
                )
        }
    } else if json_key {
        |c| c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'`' | b'\\' | b',' | b'}' | b']')
    } else if headers && at_line_start(b, name_start) {
        |c| matches!(c, b'"' | b'\'' | b'`' | b'\\' | b'\r' | b'\n' | 0x1b)
    } else {
        return None;
    };
    let mut end = i;
    while end < b.len() && !stop(b[end]) {
        end += 1;
    }
    while end > i && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    let value = &s[i..end];
    if value.is_empty() || value == MASK || value.starts_with(['{', '[']) {
        return None;
    }
    let quote = if json_key && !quoted && sep == b':' {
        key_quote
    } else {
        String::new()
    };
    Some(Field {
        start: i,
        end,
        quote,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const JWT_SAMPLE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEiLCJleHAiOjE3OTYxODk1NzN9.d-tY4-i7fsrCBVFD8jtCdMc_IlrH6VX2Q5UZmiIgNSg";

    #[test]
    fn secret_names_by_pattern() {
        for name in [
            "Authorization",
            "authorization",
            "Proxy-Authorization",
            "X-Auth",
            "Auth",
            "Api-Key",
            "X-API-KEY",
            "Ocp-Apim-Subscription-Key",
            "access_key",
            "apikey",
            "api_key",
            "token",
            "access_token",
            "refresh-token",
            "client_secret",
            "password",
            "db_passwd",
            "Cookie",
            "Set-Cookie",
            "X-Session-Id",
            "session",
            "X-Amz-Credential",
            "X-Amz-Signature",
        ] {
            assert!(is_secret_name(name), "{name} must be secret");
        }
    }

    #[test]
    fn plan_fields_that_name_where_a_secret_lives_stay_visible() {
        for name in [
            "secret_env",
            "secret_file",
            "key_env",
            "key_file",
            "token_per",
            "token_type",
            "Secret_Env",
            "subject",
            "subject_pool",
            "query_param",
            "subprotocol_prefix",
            "placement",
            "claims",
            "headers",
            "query",
            "base_url",
            "ws_url",
            "thread_id",
            "user_id",
            "sessions",
            ":authority",
            "X-Stage",
        ] {
            assert!(!is_secret_name(name), "{name} must stay visible");
        }
    }

    #[test]
    fn url_user_info_is_masked() {
        assert_eq!(
            url("https://user:pass@host.example/x"),
            "https://<redacted>@host.example/x"
        );
        assert_eq!(
            url("ws://alice:pw@127.0.0.1:8080/ws"),
            "ws://<redacted>@127.0.0.1:8080/ws"
        );
        assert_eq!(url("http://token@host"), "http://<redacted>@host");
        // An `@` in the path or query is no user-info.
        assert_eq!(
            url("http://host/a@b?mail=a@b.c"),
            "http://host/a@b?mail=a@b.c"
        );
    }

    #[test]
    fn url_secret_query_parameters_are_masked() {
        assert_eq!(
            url("wss://h/ws?thread_id=t-1&access_key=AK123&X-Amz-Signature=ab12"),
            "wss://h/ws?thread_id=t-1&access_key=<redacted>&X-Amz-Signature=<redacted>"
        );
        assert_eq!(
            url("https://h/cb#access_token=abc&state=s"),
            "https://h/cb#access_token=<redacted>&state=s"
        );
        assert_eq!(
            url("/api/items?api%5Fkey=k&page=2"),
            "/api/items?api%5Fkey=<redacted>&page=2"
        );
        assert_eq!(url(&format!("/ws?jwt={JWT_SAMPLE}")), "/ws?jwt=<redacted>");
        assert_eq!(
            url("http://127.0.0.1:8080/api/health?full=1"),
            "http://127.0.0.1:8080/api/health?full=1"
        );
    }

    #[test]
    fn url_leaves_what_is_not_a_url_alone() {
        for s in ["-", "", "/ws", "not a url: token=x", "127.0.0.1:8080"] {
            assert_eq!(url(s), s);
        }
    }

    #[test]
    fn a_bearer_jwt_header_is_masked() {
        assert_eq!(
            text(&format!("Authorization: Bearer {JWT_SAMPLE}")),
            "Authorization: <redacted>"
        );
        assert_eq!(
            text(&format!("invalid credentials: Bearer {JWT_SAMPLE}")),
            "invalid credentials: Bearer <redacted>"
        );
        assert_eq!(
            text("got bearer abc123def and Basic dXNlcjpwYXNz"),
            "got bearer <redacted> and Basic <redacted>"
        );
        // Words after `basic` / `bearer` are no credentials.
        assert_eq!(
            text("basic smoke test; Basic realm=x; bearer token"),
            "basic smoke test; Basic realm=x; bearer token"
        );
    }

    #[test]
    fn a_jwt_alone_in_a_sample_is_masked() {
        let sample = format!(r#"{{"type":"ack","received_type":"{JWT_SAMPLE}"}}"#);
        assert_eq!(
            text(&sample),
            r#"{"type":"ack","received_type":"<redacted>"}"#
        );
        // Cut after its payload, it still goes.
        let cut = &JWT_SAMPLE[..JWT_SAMPLE.rfind('.').unwrap() - 3];
        assert_eq!(text(&format!("frame `{cut}…`")), "frame `<redacted>…`");
        // In base64, as the subprotocol placement sends it.
        assert_base64_jwt_masked(JWT_SAMPLE);
    }

    fn assert_base64_jwt_masked(jwt: &str) {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut b64 = String::new();
        for chunk in jwt.as_bytes().chunks(3) {
            let n = chunk.iter().fold(0u32, |n, c| (n << 8) | *c as u32) << (8 * (3 - chunk.len()));
            for k in 0..=chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            }
        }
        assert!(b64.starts_with("ZXlK"), "{b64}");
        assert_eq!(
            text(&format!("Sec-WebSocket-Protocol: jwt.{b64}")),
            "Sec-WebSocket-Protocol: jwt.<redacted>"
        );
    }

    #[test]
    fn named_header_forms_are_masked_in_a_request_dump() {
        // What the worker logs at trace level (as tungstenite did): the request, debug-escaped.
        let dump = format!(
            r#"Request: "GET /ws?thread_id=t&access_key=query-val HTTP/1.1\r\nHost: 127.0.0.1:1\r\nauthorization: Bearer {JWT_SAMPLE}\r\nx-auth: xauth-val\r\nocp-apim-subscription-key: ocp-val\r\napi-key: apikey-val\r\ncookie: a=1; b=2\r\nx-session-id: sess-val\r\nx-stage: eu\r\n\r\n""#
        );
        assert_eq!(
            text(&dump),
            r#"Request: "GET /ws?thread_id=t&access_key=<redacted> HTTP/1.1\r\nHost: 127.0.0.1:1\r\nauthorization: <redacted>\r\nx-auth: <redacted>\r\nocp-apim-subscription-key: <redacted>\r\napi-key: <redacted>\r\ncookie: <redacted>\r\nx-session-id: <redacted>\r\nx-stage: eu\r\n\r\n""#
        );
        // Raw header lines.
        assert_eq!(
            text("HTTP/1.1 401\r\nSet-Cookie: session=s3cr3t; Path=/\r\nX-Api-Key: k1\nVia: x"),
            "HTTP/1.1 401\r\nSet-Cookie: <redacted>\r\nX-Api-Key: <redacted>\nVia: x"
        );
    }

    #[test]
    fn named_pairs_are_masked_in_free_text() {
        assert_eq!(
            text("denied: access_key=AK1&page=2, Api-Key=abc; sessions=3"),
            "denied: access_key=<redacted>&page=2, Api-Key=<redacted>; sessions=3"
        );
        assert_eq!(
            text(r#"{"error":"bad","session_id":"s-1","token":null,"n":1,"auth":{"x":1}}"#),
            r#"{"error":"bad","session_id":"<redacted>","token":"<redacted>","n":1,"auth":{"x":1}}"#
        );
        // Escaped JSON inside a JSON log line stays valid JSON.
        assert_eq!(
            text(r#"{"message":"frame {\"X-Auth\":\"v\",\"session\":42}"}"#),
            r#"{"message":"frame {\"X-Auth\":\"<redacted>\",\"session\":\"<redacted>\"}"}"#
        );
        assert_eq!(
            text(r#"Config { api_key: Some("k-1"), name: "n" }"#),
            r#"Config { api_key: Some("<redacted>"), name: "n" }"#
        );
        // A coloured log field.
        assert_eq!(
            text("\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0mabc \x1b[3msessions\x1b[0m\x1b[2m=\x1b[0m3"),
            "\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0m<redacted> \x1b[3msessions\x1b[0m\x1b[2m=\x1b[0m3"
        );
        assert_eq!(
            text("close 1008 \"cookie=c00k1e\""),
            "close 1008 \"cookie=<redacted>\""
        );
        assert_eq!(
            text("fetch https://bob:hunter2@h/x failed"),
            "fetch https://<redacted>@h/x failed"
        );
    }

    #[test]
    fn gauntlet_messages_keep_their_words() {
        for s in [
            "expect session_created: /type == \"session_created\" (meanwhile 1 frame arrived)",
            "gauntlet_worker::auth: minting",
            "close 1008 \"SSOT Auth failed\"",
            "HTTP 401 {\"detail\":\"Not authenticated\",\"error_code\":\"AUTH_REQUIRED\",\"reason\":\"no_token\"}",
            "p.toml:3:1: auth.secret_env: JWT_KEY is not set",
            "secret_env = \"JWT_SECRET_KEY\"",
            "token_per=vu",
        ] {
            assert_eq!(text(s), s);
        }
        assert_eq!(
            message("auth: a secret is needed"),
            "auth: a secret is needed"
        );
        assert_eq!(text("auth: abc"), "auth: <redacted>");
        assert_eq!(
            message("`ws://u:p@h/ws?access_key=k` must start with ws://"),
            "`ws://<redacted>@h/ws?access_key=<redacted>` must start with ws://"
        );
    }

    #[test]
    fn text_is_idempotent() {
        let s = format!("Authorization: Bearer {JWT_SAMPLE}\nk: token=abc https://u:p@h");
        let once = text(&s);
        assert_eq!(text(&once), once);
    }

    #[test]
    fn plan_toml_masks_each_named_form_and_keeps_plan_structure() {
        let plan = format!(
            r#"
name = "p"
[target]
base_url = "https://user:pass@staging.example"
ws_url = "wss://staging.example/ws?access_key=AK-1&region=eu"
headers = {{ Authorization = "Bearer abc", Api-Key = "ak", X-Auth = "xa", Ocp-Apim-Subscription-Key = "ocp", Cookie = "c", X-Session-Id = "sid", X-Stage = "eu" }}
[auth]
secret_env = "JWT_SECRET_KEY"
key_file = "/run/keys/k.pem"
token_per = "vu"
subject = "user-{{subject_index}}"
query_param = "token"
subprotocol_prefix = "jwt."
claims = {{ api_key = "k", token_type = "access", session = {{ id = "sid2" }}, refresh_token = 7, n = 8 }}
[[scenarios]]
name = "s"
vars = {{ session_secret = "v", thread = "t-{{vu}}" }}
steps = [
  {{ ws_connect = {{ auth = true, query = {{ access_key = "qk", thread_id = "{{thread}}" }} }} }},
  {{ ws_send = {{ json = {{ type = "hello", jwt = "{JWT_SAMPLE}" }} }} }},
  {{ http = {{ path = "https://h/x?api_key=pk&page=1", auth = true }} }},
]
"#
        );
        let r = plan_toml(&plan);
        for secret in [
            "user:pass",
            "AK-1",
            "Bearer abc",
            "\"ak\"",
            "\"xa\"",
            "\"ocp\"",
            "\"c\"",
            "\"sid\"",
            "\"k\"",
            "sid2",
            "\"v\"",
            "\"qk\"",
            "pk",
            "eyJ",
            "= 7",
        ] {
            assert!(!r.contains(secret), "{secret} left in:\n{r}");
        }
        for kept in [
            "base_url = \"https://<redacted>@staging.example\"",
            "ws_url = \"wss://staging.example/ws?access_key=<redacted>&region=eu\"",
            "X-Stage = \"eu\"",
            "secret_env = \"JWT_SECRET_KEY\"",
            "key_file = \"/run/keys/k.pem\"",
            "token_per = \"vu\"",
            "subject = \"user-{subject_index}\"",
            "query_param = \"token\"",
            "subprotocol_prefix = \"jwt.\"",
            "token_type = \"access\"",
            "thread = \"t-{vu}\"",
            "thread_id = \"{thread}\"",
            "auth = true",
            "n = 8",
            "path = \"https://h/x?api_key=<redacted>&page=1\"",
        ] {
            assert!(r.contains(kept), "{kept} missing from:\n{r}");
        }
        assert_eq!(plan_toml("not = [toml"), "");
    }
}
