//! `gauntlet demo`: starts the embedded testbed with a few faults switched on, drives one short
//! conversation per virtual user against it, and prints what the clients saw next to the
//! testbed's ground truth. The distributed fleet (coordinator + workers) replaces the simple
//! client loop here when it lands; the command line stays the same.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use gauntlet_core::units::Rate;
use gauntlet_testbed::config::Secret;
use gauntlet_testbed::faults::{EventFault, Fault, Faults};
use gauntlet_testbed::{Testbed, TestbedConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// `gauntlet demo` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Virtual users (each its own JWT subject, one conversation each).
    #[arg(long, default_value_t = 50)]
    users: u32,
    /// Keep the testbed running after the demo until Ctrl-C, to explore it by hand.
    #[arg(long)]
    serve: bool,
}

const EXPECTED: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];
/// Bound on each conversation: the demo always ends on its own.
const CONVERSATION_LIMIT: Duration = Duration::from_secs(15);

/// Runs the demo.
#[allow(clippy::print_stdout)]
pub async fn run(args: Args) -> anyhow::Result<u8> {
    if args.users == 0 {
        return Err(crate::testbed::UsageError("--users must be at least 1".into()).into());
    }
    let secret = format!(
        "demo-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    let mut config = TestbedConfig {
        seed: 1,
        ..TestbedConfig::default()
    };
    config.auth.secret = Some(Secret(secret.clone().into_bytes()));
    config.faults = Faults {
        factory_init: Some(Fault {
            rate: Rate::new(0.1).unwrap_or(Rate::ZERO),
            users: None,
        }),
        missing_event: Some(EventFault {
            rate: Rate::new(0.1).unwrap_or(Rate::ZERO),
            users: None,
            event: None,
        }),
        ..Faults::default()
    };
    let testbed = Testbed::start(config, "127.0.0.1:0".parse()?)
        .await
        .context("cannot start the embedded testbed")?;
    println!(
        "testbed: {} (faults: factory_init 10%, missing_event 10%)",
        testbed.ws_url()
    );

    let conversations = (0..args.users).map(|u| converse(&testbed, &secret, format!("user-{u}")));
    let outcomes = futures_util::future::join_all(conversations).await;
    let mut by_outcome: BTreeMap<String, u32> = BTreeMap::new();
    for outcome in outcomes {
        *by_outcome.entry(outcome).or_default() += 1;
    }
    let truth = testbed.stats();
    println!("\nwhat the {} virtual users saw:", args.users);
    for (outcome, n) in &by_outcome {
        println!("  {n:>5}  {outcome}");
    }
    println!("\ntestbed ground truth:");
    println!(
        "  established {}, refused {:?}",
        truth.connections.established, truth.connections.rejected
    );
    println!(
        "  pipelines started {}, completed {}",
        truth.pipelines.started, truth.pipelines.completed
    );
    let injected: BTreeMap<_, _> = truth.faults.iter().filter(|(_, n)| **n > 0).collect();
    println!("  faults injected {injected:?}");
    let passed = by_outcome.get("passed").copied().unwrap_or(0);
    if passed == 0 {
        bail!("no conversation passed: the demo ran nothing useful");
    }
    if args.serve {
        println!("\nserving {} until Ctrl-C", testbed.http_url());
        crate::signals::shutdown_token().cancelled().await;
    }
    testbed.stop().await?;
    Ok(0)
}

/// One conversation: connect, ping, one agent run; the outcome in words.
async fn converse(testbed: &Testbed, secret: &str, sub: String) -> String {
    match tokio::time::timeout(CONVERSATION_LIMIT, try_converse(testbed, secret, &sub)).await {
        Ok(Ok(outcome)) | Ok(Err(outcome)) => outcome,
        Err(_) => "timeout".into(),
    }
}

async fn try_converse(testbed: &Testbed, secret: &str, sub: &str) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = json!({"sub": sub, "iat": now, "exp": now + 900, "token_type": "access",
        "iss": "netra-auth-service", "jti": format!("{sub}-{now}")});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .map_err(|e| e.to_string())?;
    let mut request = testbed
        .ws_url()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let bearer = HeaderValue::from_str(&format!("Bearer {jwt}")).map_err(|e| e.to_string())?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let mut next = async || -> Result<Value, String> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).map_err(|_| "invalid JSON".to_owned());
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Err(format!("closed {} \"{reason}\"", u16::from(code)));
                }
                Some(Ok(Message::Close(None))) | None => return Err("closed".into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("connection error: {e}")),
            }
        }
    };
    let mut first = next().await?;
    if first["type"] == "error_message" {
        let code = first["error_code"].as_str().unwrap_or("?").to_owned();
        let close = next().await.err().unwrap_or_default();
        return Err(format!("{code}, {close}"));
    }
    if first["data"]["event"] != "connection_established" {
        return Err(format!("unexpected first frame {}", first["type"]));
    }
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::Text(
        json!({"type": "start_agent", "payload": {"user_request": "demo"}})
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            return Err("connection ended mid-run".into());
        };
        first = serde_json::from_str(&t).map_err(|_| "invalid JSON".to_owned())?;
        let kind = first["type"].as_str().unwrap_or_default().to_owned();
        if kind == "pong" {
            continue;
        }
        seen.push(kind.clone());
        if kind == "agent_completed" {
            break;
        }
    }
    let _ = ws.close(None).await;
    if seen == EXPECTED {
        Ok("passed".into())
    } else {
        let missing: Vec<_> = EXPECTED
            .iter()
            .filter(|e| !seen.iter().any(|s| s == *e))
            .collect();
        Err(format!("event sequence wrong (missing {missing:?})"))
    }
}
