//! Several targets and source addresses, seen by the testbeds themselves: with `base_url` a
//! list of n testbeds, VU `i` (closed model) or arrival `i` (open model) reaches testbed
//! `i % n`, however the load is cut between workers; a worker with two source addresses
//! (`--local-addresses`) opens its WebSocket and HTTP connections from both, in turn.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_testbed::Testbed;
use gauntlet_worker::sources::SourceAddresses;
use gauntlet_worker::{Program, RunConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A plan against `targets` (a TOML value: a string or a list): each session connects as
/// `user-<subject_index>`, then does `after_connect`, and closes.
fn plan(name: &str, targets: &str, load: &str, steps: &str) -> Plan {
    let text = format!(
        r#"name = "{name}"
[target]
base_url = {targets}
{auth}
[load]
{load}
[[scenarios]]
name = "s"
steps = [
{steps}
]
"#,
        auth = auth(name, "subject_pool = 1000")
    );
    match Plan::from_text("targets.toml", &text, &Overrides::default()) {
        Ok(p) => p,
        Err(e) => panic!("bad test plan: {e}\n{text}"),
    }
}

const CONNECT: &str = r#"  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_close = {} },"#;

/// `base_url = [...]` of the testbeds.
fn list(tbs: &[Testbed]) -> String {
    let urls: Vec<String> = tbs
        .iter()
        .map(|t| format!("\"{}\"", t.http_url()))
        .collect();
    format!("[{}]", urls.join(", "))
}

/// Runs `program` on each of `segments` at once (as that many workers would) and merges.
async fn run_split(program: Arc<Program>, segments: usize) -> Snapshot {
    let weights = vec![1; segments];
    let mut engines = Vec::new();
    for (_, segment) in ExecutionSegment::split(&weights) {
        let (tx, mut rx) = mpsc::channel(64);
        let config = RunConfig {
            segment,
            ..RunConfig::default()
        };
        let run = tokio::spawn(gauntlet_worker::run(
            program.clone(),
            config,
            CancellationToken::new(),
            tx,
        ));
        engines.push(tokio::spawn(async move {
            let mut total = Snapshot::default();
            while let Some(d) = rx.recv().await {
                total.merge(&d.snapshot);
            }
            run.await.unwrap();
            total
        }));
    }
    let mut total = Snapshot::default();
    for e in engines {
        total.merge(&e.await.unwrap());
    }
    total
}

/// The users each testbed established connections for, and how many times.
fn users_by_testbed(tbs: &[Testbed]) -> Vec<BTreeMap<String, u64>> {
    tbs.iter()
        .map(|t| {
            t.stats()
                .users
                .into_iter()
                .map(|(u, totals)| (u, totals.established))
                .collect()
        })
        .collect()
}

fn users(range: impl Iterator<Item = u64>, times: u64) -> BTreeMap<String, u64> {
    range.map(|i| (format!("user-{i}"), times)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_vu_i_reaches_target_i_mod_n_with_one_worker_or_two() {
    for workers in [1, 2] {
        let tbs = vec![
            start(config()).await,
            start(config()).await,
            start(config()).await,
        ];
        let p = plan("closed", &list(&tbs), "vus = 7\niterations = 2", CONNECT);
        let total = run_split(Arc::new(Program::compile(p).unwrap()), workers).await;
        assert_eq!(total.counters.sessions_passed, 14, "{workers} workers");
        // VU i is user-i (one subject per VU): testbed k saw exactly the VUs i with i % 3 == k,
        // twice each.
        assert_eq!(
            users_by_testbed(&tbs),
            [
                users([0, 3, 6].into_iter(), 2),
                users([1, 4].into_iter(), 2),
                users([2, 5].into_iter(), 2),
            ],
            "{workers} workers"
        );
        for tb in tbs {
            tb.stop().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_arrival_i_reaches_target_i_mod_n_with_one_worker_or_three() {
    for workers in [1, 3] {
        let tbs = vec![start(config()).await, start(config()).await];
        // 20 arrivals; with a pool of 1000 subjects arrival k runs as user-k.
        let p = plan(
            "open",
            &list(&tbs),
            "model = \"open\"\nrate = 100\nduration = \"200ms\"\nmax_vus = 20\ngraceful_stop = \"5s\"",
            CONNECT,
        );
        let total = run_split(Arc::new(Program::compile(p).unwrap()), workers).await;
        assert_eq!(total.counters.sessions_passed, 20, "{workers} workers");
        assert_eq!(
            users_by_testbed(&tbs),
            [
                users((0..20).filter(|k| k % 2 == 0), 1),
                users((0..20).filter(|k| k % 2 == 1), 1),
            ],
            "{workers} workers"
        );
        for tb in tbs {
            tb.stop().await.unwrap();
        }
    }
}

/// Connections per source address, as the testbed saw them.
fn peers(tb: &Testbed) -> BTreeMap<String, u64> {
    tb.stats().peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_two_source_addresses_connects_from_both() {
    let sources = SourceAddresses::new(&["127.0.0.2".into(), "127.0.0.3".into()]).unwrap();
    let compile = |p: Plan| {
        Arc::new(
            Program::compile_for(p, gauntlet_worker::access::Access::open(), sources.clone())
                .unwrap(),
        )
    };

    // WebSocket: 6 VUs, one connection each, from 127.0.0.2 and .3 in turn.
    let tb = start(config()).await;
    let p = plan(
        "sources",
        &format!("\"{}\"", tb.http_url()),
        "vus = 6\niterations = 1",
        CONNECT,
    );
    let total = run_split(compile(p), 1).await;
    assert_eq!(total.counters.sessions_passed, 6);
    assert_eq!(
        peers(&tb),
        BTreeMap::from([("127.0.0.2".to_owned(), 3), ("127.0.0.3".to_owned(), 3)])
    );
    // The same users as without source addresses: VU i from address i % 2.
    assert_eq!(tb.stats().connections.established, 6);
    tb.stop().await.unwrap();

    // HTTP: 2 VUs, one request each, each through the client of its own address.
    let tb = start(config()).await;
    let p = plan(
        "sources-http",
        &format!("\"{}\"", tb.http_url()),
        "vus = 2\niterations = 1",
        r#"  { http = { path = "/health" } },"#,
    );
    let total = run_split(compile(p), 1).await;
    assert_eq!(total.counters.sessions_passed, 2);
    assert_eq!(
        peers(&tb),
        BTreeMap::from([("127.0.0.2".to_owned(), 1), ("127.0.0.3".to_owned(), 1)])
    );
    tb.stop().await.unwrap();

    // Without source addresses the kernel picks 127.0.0.1 towards 127.0.0.1.
    let tb = start(config()).await;
    let p = plan(
        "no-sources",
        &format!("\"{}\"", tb.http_url()),
        "vus = 2\niterations = 1",
        CONNECT,
    );
    run_split(Arc::new(Program::compile(p).unwrap()), 1).await;
    assert_eq!(peers(&tb), BTreeMap::from([("127.0.0.1".to_owned(), 2)]));
    tb.stop().await.unwrap();
}
