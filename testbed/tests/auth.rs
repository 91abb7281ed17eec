//! Token placement, JWT validation rules, and both rejection modes, against a real server.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gauntlet_testbed::config::{ConfirmationShape, RejectionMode};
use serde_json::json;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn every_token_placement_is_accepted() {
    let tb = start(config()).await;
    for placement in [Placement::Header, Placement::Subprotocol, Placement::Query] {
        let jwt = token("user-1");
        let (mut ws, response) = connect_with(&tb, Some(&jwt), placement, "").await.unwrap();
        if let Placement::Subprotocol = placement {
            let echoed = response
                .headers()
                .get("sec-websocket-protocol")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(echoed.starts_with("jwt."), "{echoed}");
        }
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "system_message");
        assert_eq!(hello["data"]["event"], "connection_established");
        assert_eq!(hello["data"]["user_id"], "user-1");
        assert_eq!(hello["data"]["connection_ready"], true);
    }
    assert_eq!(tb.stats().connections.established, 3);
    assert_eq!(tb.stats().connections.rejected_total, 0);
}

#[tokio::test]
async fn confirmation_can_take_the_later_shape() {
    let mut c = config();
    c.websocket.confirmation = ConfirmationShape::ConnectionEstablished;
    let tb = start(c).await;
    let mut ws = connect(&tb, "u").await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connection_established");
    assert_eq!(hello["user_id"], "u");
}

/// Every way a token can be wrong, with the reason the testbed records for it.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("user-9");
        f(&mut c);
        Some(sign(&c))
    };
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims("user-9"),
        &jsonwebtoken::EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    vec![
        ("no_token", None),
        ("malformed_token", Some("not-a-jwt".into())),
        ("bad_signature", Some(other_key)),
        ("expired", with(&|c| c["exp"] = json!(now() - 10))),
        ("bad_issuer", with(&|c| c["iss"] = json!("someone-else"))),
        (
            "bad_token_type",
            with(&|c| c["token_type"] = json!("refresh")),
        ),
        (
            "missing_claim",
            with(&|c| drop(c.as_object_mut().unwrap().remove("jti"))),
        ),
        (
            "iat_out_of_range",
            with(&|c| c["iat"] = json!(now() - 25 * 3600)),
        ),
        ("iat_out_of_range", with(&|c| c["iat"] = json!(now() + 120))),
        ("bad_audience", with(&|c| c["aud"] = json!("not-allowed"))),
    ]
}

#[tokio::test]
async fn accept_then_close_sends_error_frame_then_1008() {
    let mut c = config();
    c.auth.audiences = vec!["netra".into()];
    let tb = start(c).await;
    let cases = bad_tokens();
    for (reason, jwt) in &cases {
        let (mut ws, _) = connect_with(&tb, jwt.as_deref(), Placement::Header, "")
            .await
            .unwrap();
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["type"], "error_message", "{reason}");
        let expected_code = if *reason == "no_token" {
            "NO_TOKEN"
        } else {
            "AUTH_FAILED"
        };
        assert_eq!(frame["error_code"], expected_code, "{reason}");
        assert_eq!(frame["details"]["reason"], *reason);
        assert_eq!(
            expect_close(&mut ws).await,
            (1008, "SSOT Auth failed".into()),
            "{reason}"
        );
    }
    let stats = tb.stats();
    assert_eq!(stats.connections.rejected_total, cases.len() as u64);
    assert_eq!(stats.connections.auth_rejected, cases.len() as u64);
    assert_eq!(stats.connections.rejected["iat_out_of_range"], 2);
    assert_eq!(stats.connections.rejected["expired"], 1);
    assert_eq!(stats.connections.established, 0);
}

#[tokio::test]
async fn reject_handshake_answers_403_before_the_upgrade() {
    let mut c = config();
    c.auth.rejection = RejectionMode::RejectHandshake;
    let tb = start(c).await;
    for (reason, jwt) in bad_tokens().into_iter().take(4) {
        match connect_with(&tb, jwt.as_deref(), Placement::Query, "").await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{reason}")
            }
            other => panic!("{reason}: expected a 403 handshake rejection, got {other:?}"),
        }
    }
    let stats = tb.stats();
    assert_eq!(
        (stats.connections.accepted, stats.connections.auth_rejected),
        (4, 4)
    );
    // A good token still gets in.
    let _ws = established(&tb, "user-1").await;
}

#[tokio::test]
async fn rs256_tokens_are_accepted_with_a_public_key() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut c = config();
    c.auth.rsa_public_key_file = Some(dir.join("rsa_public.pem"));
    let tb = start(c).await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(dir.join("rsa_private.pem")).unwrap(),
    )
    .unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims("rsa-user"),
        &key,
    )
    .unwrap();
    let (mut ws, _) = connect_with(&tb, Some(&jwt), Placement::Subprotocol, "")
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["data"]["user_id"], "rsa-user");
}

#[tokio::test]
async fn ws_test_endpoint_needs_no_auth() {
    let tb = start(config()).await;
    let url = format!("ws://{}/ws/test", tb.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_established");
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
}
