//! `gauntlet probe URL`: a health check for images without a shell or curl: GET an http://
//! URL and exit 0 on a 2xx answer within two seconds, non-zero otherwise. `--method` and
//! `--body` make it a tiny HTTP client for scripts (switching testbed faults between cycles).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}`: only http:// URLs can be probed"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = tcp.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{url}: not an HTTP answer"))?;
    Ok(code)
}
