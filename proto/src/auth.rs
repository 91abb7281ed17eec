//! Bearer-token authentication of the gRPC services: the coordinator checks
//! `authorization: Bearer <token>` on every call when it has a token (the worker token on the
//! WorkerService, the submit token on the ControlService), and clients attach it. Use TLS
//! (`endpoint` with `https://`) wherever the network is not yours.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// A server interceptor: every call must carry `token` when one is set.
pub fn check_token(
    token: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(expected) = &token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if same(given.as_bytes(), expected.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated(
                "this coordinator needs a token: --token (workers: GAUNTLET_TOKEN; gauntlet run: GAUNTLET_SUBMIT_TOKEN)",
            )),
        }
    }
}

/// A client interceptor attaching `token`, if any.
pub fn attach_token(
    token: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let header = token.and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok());
    move |mut req: Request<()>| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// Compares without stopping at the first difference (tokens, session keys).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A coordinator URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL tonic can connect to.
    #[error("bad coordinator URL `{url}`: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A CA certificate for a URL that is not `https://`.
    #[error("a CA certificate was given but `{0}` is not https://")]
    CaWithoutTls(String),
    /// The TLS settings cannot be used.
    #[error("TLS settings for `{url}`: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A client endpoint for `url`: TLS for `https://` URLs (the bundled web roots, plus the PEM
/// CA certificate `ca` if given), plain HTTP/2 otherwise.
pub fn endpoint(url: &str, ca: Option<&[u8]>) -> Result<tonic::transport::Endpoint, EndpointError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    // HTTP/2 keepalive notices a connection that went silent (a cable cut drops packets
    // without a reset), so the worker can reconnect or, past its lease, stop its sessions.
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| EndpointError::BadUrl {
            url: url.to_owned(),
            source,
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(2))
        .keep_alive_timeout(std::time::Duration::from_secs(3))
        .keep_alive_while_idle(true);
    if !url.starts_with("https://") {
        if ca.is_some() {
            return Err(EndpointError::CaWithoutTls(url.to_owned()));
        }
        return Ok(endpoint);
    }
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    endpoint
        .tls_config(tls)
        .map_err(|source| EndpointError::Tls {
            url: url.to_owned(),
            source,
        })
}
