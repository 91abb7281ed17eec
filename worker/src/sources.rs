//! Source addresses (`gauntlet worker --local-addresses`, k6's `--local-ips`): the local IP
//! addresses a worker binds its outgoing TCP connections to, WebSocket and HTTP, one per
//! session in turn (session `i`, the VU or arrival number, uses address `i % n`). Each source
//! address has its own ephemeral ports, so one worker is not bound by the ~28k ports of one
//! address towards one target.
//!
//! The addresses are checked once, at startup (each must be bindable on this machine); a
//! connection binds with `IP_BIND_ADDRESS_NO_PORT` on Linux, so its port is chosen at connect
//! time per destination rather than reserved per source address at bind time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};

/// Most source addresses a worker may list.
pub const MAX_SOURCES: usize = 1024;

/// A worker's source addresses; none (the kernel picks, as without the flag) by default.
#[derive(Debug, Clone, Default)]
pub struct SourceAddresses(Arc<[IpAddr]>);

/// A `--local-addresses` list that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An entry does not parse as an IP address.
    #[error("--local-addresses: `{0}` is not an IP address")]
    NotAnAddress(String),
    /// An unspecified (`0.0.0.0`) or multicast address.
    #[error("--local-addresses: {0} is not a unicast address a connection can come from")]
    NotUnicast(IpAddr),
    /// Binding a socket to it failed: it is not an address of this machine.
    #[error(
        "--local-addresses: {addr} cannot be a source address on this machine ({source}); list \
         addresses of its interfaces (any of 127.0.0.0/8 on loopback)"
    )]
    Unusable {
        /// The address.
        addr: IpAddr,
        /// Why binding to it failed.
        source: std::io::Error,
    },
    /// More than [`MAX_SOURCES`].
    #[error("--local-addresses: {0} addresses, more than {MAX_SOURCES}")]
    TooMany(usize),
}

impl SourceAddresses {
    /// Parses and checks `list` (each entry trimmed; empty entries skipped): every address must
    /// be bindable here. An empty list is no source address.
    pub fn new(list: &[String]) -> Result<SourceAddresses, SourceError> {
        let mut out = Vec::new();
        for entry in list.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let addr: IpAddr = entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| SourceError::NotAnAddress(entry.to_owned()))?;
            if addr.is_unspecified() || addr.is_multicast() {
                return Err(SourceError::NotUnicast(addr));
            }
            // Binding a listener to port 0 of it is what a connection's bind needs too.
            std::net::TcpListener::bind(SocketAddr::new(addr, 0))
                .map_err(|source| SourceError::Unusable { addr, source })?;
            out.push(addr);
        }
        if out.len() > MAX_SOURCES {
            return Err(SourceError::TooMany(out.len()));
        }
        Ok(SourceAddresses(out.into()))
    }

    /// Every address, in order.
    pub fn as_slice(&self) -> &[IpAddr] {
        &self.0
    }

    /// The source address of session `route` (`route % n`), or none when the list is empty.
    pub fn for_session(&self, route: u64) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[(route % self.0.len() as u64) as usize])
    }

    /// A TCP connection to `to` for session `route`, from its source address if there is one.
    pub async fn connect(&self, route: u64, to: SocketAddr) -> std::io::Result<TcpStream> {
        let Some(local) = self.for_session(route) else {
            return TcpStream::connect(to).await;
        };
        if local.is_ipv4() != to.is_ipv4() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("source address {local} cannot reach {to} (another address family)"),
            ));
        }
        let socket = if to.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(target_os = "linux")]
        {
            // The port is picked at connect, unique per destination: without this, every bound
            // socket would hold one of the address's ports for itself.
            let _ = nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            );
        }
        socket.bind(SocketAddr::new(local, 0))?;
        socket.connect(to).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn loopback_addresses_are_usable_in_turn() {
        let s = SourceAddresses::new(&list(&["127.0.0.2", " 127.0.0.3 ", ""])).unwrap();
        let picked: Vec<IpAddr> = (0..5).map(|i| s.for_session(i).unwrap()).collect();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        assert_eq!(picked, [a, b, a, b, a]);
        assert_eq!(SourceAddresses::default().for_session(7), None);
    }

    #[test]
    fn an_unusable_address_is_refused_naming_it() {
        for (bad, says) in [
            ("not-an-ip", "`not-an-ip` is not an IP address"),
            ("0.0.0.0", "0.0.0.0 is not a unicast address"),
            ("224.0.0.1", "224.0.0.1 is not a unicast address"),
            // TEST-NET-3: never an address of this machine.
            (
                "203.0.113.7",
                "203.0.113.7 cannot be a source address on this machine",
            ),
        ] {
            let e = SourceAddresses::new(&list(&["127.0.0.2", bad])).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn connections_come_from_their_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let s = SourceAddresses::new(&list(&["127.0.0.2", "127.0.0.3"])).unwrap();
        let mut seen = Vec::new();
        for route in 0..4 {
            let _c = s.connect(route, to).await.unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            seen.push(peer.ip().to_string());
        }
        assert_eq!(seen, ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]);
    }
}
