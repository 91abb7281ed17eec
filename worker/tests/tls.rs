//! `wss://` targets: a WebSocket echo server behind TLS with a certificate from a test CA.
//! Trusting the CA (`target.tls.ca_file`) or skipping verification connects; the bundled web
//! roots alone refuse it, and the failure is classified `tls`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use gauntlet_core::plan::{Overrides, Plan};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// Starts a TLS WebSocket echo server; returns its port and the CA certificate (PEM).
async fn tls_echo() -> (u16, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, ca.pem())
}

fn echo_plan(port: u16, tls: &str) -> Plan {
    let text = format!(
        r#"name = "wss"
[target]
base_url = "https://127.0.0.1:{port}"
ws_path = "/"
{tls}
[load]
vus = 2
iterations = 2
[[scenarios]]
name = "echo"
steps = [
  {{ ws_connect = {{}} }},
  {{ ws_send = {{ json = {{ type = "hello" }} }} }},
  {{ ws_expect = {{ type = "hello" }} }},
  {{ ws_close = {{}} }},
]
"#
    );
    Plan::from_text("wss.toml", &text, &Overrides::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_targets_follow_the_tls_settings() {
    let (port, ca_pem) = tls_echo().await;
    let ca_file = std::env::temp_dir().join(format!("gauntlet-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();

    let trusted = run(echo_plan(
        port,
        &format!("tls = {{ ca_file = \"{}\" }}", ca_file.display()),
    ))
    .await;
    assert_eq!(
        trusted.counters.sessions_passed, 4,
        "{:#?}",
        trusted.failures
    );
    assert_eq!(trusted.histograms["ws.handshake"].len(), 4);

    let skipped = run(echo_plan(port, "tls = { insecure_skip_verify = true }")).await;
    assert_eq!(
        skipped.counters.sessions_passed, 4,
        "{:#?}",
        skipped.failures
    );

    let refused = run(echo_plan(port, "")).await;
    assert_eq!(category(&refused, "tls"), 4, "{:#?}", refused.failures);
    let _ = std::fs::remove_file(ca_file);
}
