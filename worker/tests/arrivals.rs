//! Who a session runs as, seen by a target that records every request (its path rendered from
//! `{vu}`, `{iteration}`, `{subject}`, `{subject_index}`, `{scenario}`, and the verified JWT):
//! in the open model arrival `k` gets `{vu}` = k % max_vus, `{iteration}` = k / max_vus,
//! subject k % subject_pool and a token for that subject, whichever VU slot runs it and however
//! many workers share the load; the closed model keeps VU `v` -> subject `v % subject_pool`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use common::*;
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_worker::RunConfig;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One request as the target saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    /// `/who/{scenario}/{vu}/{iteration}/{subject}/{subject_index}`, without `/who/`.
    path: String,
    /// The token's `sub`.
    sub: String,
    /// The token's `vu` and `it` claims (rendered from `{vu}` and `{iteration}` when minted).
    claims: (String, String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn who(State(log): State<Log>, Path(path): Path<String>, headers: HeaderMap) -> &'static str {
    let jwt = headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .unwrap()
    .claims;
    let text = |name: &str| claims[name].as_str().unwrap().to_owned();
    log.lock().unwrap().push(Seen {
        path,
        sub: text("sub"),
        claims: (text("vu"), text("it")),
    });
    "{}"
}

/// A target recording every `/who/...` request; returns its URL and its log.
async fn recorder() -> (String, Log) {
    let log = Log::default();
    let app = Router::new()
        .route("/who/{*path}", get(who))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

fn plan(base: &str, secret: &std::path::Path, load: &str, token_per: &str) -> Plan {
    let step = r#"{ http = { path = "/who/{scenario}/{vu}/{iteration}/{subject}/{subject_index}", auth = true } }"#;
    let text = format!(
        r#"name = "who"
[target]
base_url = "{base}"
[auth]
secret_file = "{secret}"
subject = "user-{{subject_index}}"
subject_pool = 10
token_per = "{token_per}"
claims = {{ vu = "{{vu}}", it = "{{iteration}}" }}
[load]
{load}
[[scenarios]]
name = "a"
weight = 3
steps = [ {step} ]
[[scenarios]]
name = "b"
steps = [ {step} ]
"#,
        secret = secret.display(),
    );
    Plan::from_text("who.toml", &text, &Overrides::default()).unwrap()
}

/// Runs `load` split over `workers` equal segments (one engine each, all at once, one seed)
/// against a fresh recorder; returns what it saw, sorted, and the merged snapshot. `test`
/// names the secret file (one per test: tests run at once).
async fn split(test: &str, load: &str, token_per: &str, workers: u64) -> (Vec<Seen>, Snapshot) {
    let (base, log) = recorder().await;
    let secret = secret_file(test);
    let weights = vec![1; workers as usize];
    let engines: Vec<_> = ExecutionSegment::split(&weights)
        .into_iter()
        .map(|(_, segment)| {
            let config = RunConfig {
                segment,
                seed: 42,
                ..RunConfig::default()
            };
            tokio::spawn(run_with(
                plan(&base, &secret, load, token_per),
                config,
                CancellationToken::new(),
            ))
        })
        .collect();
    let mut total = Snapshot::default();
    for engine in engines {
        total.merge(&engine.await.unwrap());
    }
    let mut seen = log.lock().unwrap().clone();
    seen.sort();
    (seen, total)
}

/// `{vu}/{iteration}/{subject}/{subject_index}` of a path (the scenario cut off).
fn identity(path: &str) -> &str {
    path.split_once('/').unwrap().1
}

const OPEN: &str = "model = \"open\"\nrate = 400\nduration = \"500ms\"\nmax_vus = 140";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_arrivals_keep_their_identity_whatever_the_fleet() {
    // Arrival k: {vu} = k % 140, {iteration} = k / 140, subject k % 10.
    let mut expected: Vec<String> = (0..200u64)
        .map(|k| format!("{}/{}/user-{}/{}", k % 140, k / 140, k % 10, k % 10))
        .collect();
    expected.sort();
    for token_per in ["session", "vu"] {
        let mut first: Option<Vec<Seen>> = None;
        for workers in [1, 2, 3, 7] {
            let (seen, total) = split("open", OPEN, token_per, workers).await;
            let what = format!("token_per = {token_per}, {workers} workers");
            assert_eq!(total.counters.dropped_arrivals, 0, "{what}");
            assert_eq!(
                total.counters.sessions_passed, 200,
                "{what}: {:?}",
                total.failures
            );
            let mut identities: Vec<String> =
                seen.iter().map(|s| identity(&s.path).to_owned()).collect();
            identities.sort();
            assert_eq!(identities, expected, "{what}");
            let mut per_subject = BTreeMap::<&str, u64>::new();
            for s in &seen {
                // The token is always the session's own subject's, kept or fresh.
                let subject = s.path.split('/').nth(3).unwrap();
                assert_eq!(s.sub, subject, "{what}: {s:?}");
                *per_subject.entry(&s.sub).or_default() += 1;
                if token_per == "session" {
                    let (vu, it) = &s.claims;
                    assert!(
                        identity(&s.path).starts_with(&format!("{vu}/{it}/")),
                        "{s:?}"
                    );
                }
            }
            assert_eq!(per_subject.len(), 10, "{what}");
            assert!(
                per_subject.values().all(|n| *n == 20),
                "{what}: {per_subject:?}"
            );
            // Scenario picks follow the arrival too: the same paths with any fleet.
            let paths: Vec<&String> = seen.iter().map(|s| &s.path).collect();
            match &first {
                None => first = Some(seen.clone()),
                Some(one) => {
                    let one: Vec<&String> = one.iter().map(|s| &s.path).collect();
                    assert_eq!(paths, one, "{what} vs 1 worker");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_model_keeps_one_subject_per_vu() {
    let (seen, total) = split("closed", "vus = 20\niterations = 2", "vu", 2).await;
    assert_eq!(total.counters.sessions_passed, 40);
    let mut expected: Vec<String> = (0..20u64)
        .flat_map(|v| (0..2).map(move |i| format!("{v}/{i}/user-{}/{}", v % 10, v % 10)))
        .collect();
    expected.sort();
    let mut identities: Vec<String> = seen.iter().map(|s| identity(&s.path).to_owned()).collect();
    identities.sort();
    assert_eq!(identities, expected);
    for s in &seen {
        // One token per VU, minted in its first session.
        let vu = identity(&s.path).split('/').next().unwrap();
        assert_eq!(s.claims, (vu.to_owned(), "0".to_owned()), "{s:?}");
        assert_eq!(s.sub, format!("user-{}", vu.parse::<u64>().unwrap() % 10));
    }
}
