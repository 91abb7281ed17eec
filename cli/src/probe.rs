//! `gauntlet probe URL`: a health check for images without a shell or curl: GET an http://
//! URL and exit 0 on a 2xx answer within two seconds, non-zero otherwise. `--method` and
//! `--body` make it a tiny HTTP client for scripts (switching testbed faults between cycles).

use std::time::Duration;

use anyhow::{Context, bail};

/// `gauntlet probe` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL (`http://host:port/path`).
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A JSON body to send.
    #[arg(long)]
    body: Option<String>,
}

/// Probes the URL.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let request = (args.method.as_str(), args.body.as_deref());
    match tokio::time::timeout(Duration::from_secs(2), status(&args.url, request)).await {
        Ok(Ok(code)) if (200..300).contains(&code) => Ok(0),
        Ok(Ok(code)) => bail!("{} answered {code}", args.url),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("{} did not answer within 2 s", args.url),
    }
}

async fn status(url: &str, (method, body): (&str, Option<&str>)) -> anyhow::Result<u16> {
    if !url.starts_with("http://") {
        bail!("`{url}`: only http:// URLs can be probed");
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .with_context(|| format!("`{method}` is not an HTTP method"))?;
    // Plain HTTP only: no TLS, so none is set up.
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    Ok(response.status().as_u16())
}
