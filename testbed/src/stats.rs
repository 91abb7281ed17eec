//! Ground truth: what the testbed did, counted as it happened, served as JSON at
//! `GET /__testbed/stats`. Gauntlet's tests compare its reports to these numbers exactly.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::capacity::CapacitySnapshot;
use crate::factory::FactorySnapshot;
use crate::faults::FaultKind;
use crate::protocol::AgentEvent;

/// Why a connection was refused or closed before its confirmation frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No token in header, subprotocol or query.
    NoToken,
    /// Not a JWT, or a part of it does not decode.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// `alg` is not one the testbed is configured to accept.
    UnsupportedAlgorithm,
    /// `exp` has passed.
    Expired,
    /// `iss` is not the service's issuer.
    BadIssuer,
    /// `aud` is not an allowed audience.
    BadAudience,
    /// `token_type` is not "access".
    BadTokenType,
    /// `sub`, `exp`, `iat` or `jti` is missing.
    MissingClaim,
    /// `iat` is older than the maximum age or too far in the future.
    IatOutOfRange,
    /// The `auth_reject` fault.
    InjectedAuth,
    /// The `user_context` fault.
    UserContext,
    /// The factory limit, or the `factory_init` fault.
    FactoryInitFailed,
    /// The `factory_critical` fault.
    FactoryCritical,
    /// The `service_not_ready` fault.
    ServiceNotReady,
    /// Warm-up after start.
    WarmingUp,
    /// The `internal_error` fault.
    InternalError,
}

impl RejectReason {
    const ALL: [RejectReason; 17] = [
        RejectReason::NoToken,
        RejectReason::Malformed,
        RejectReason::BadSignature,
        RejectReason::UnsupportedAlgorithm,
        RejectReason::Expired,
        RejectReason::BadIssuer,
        RejectReason::BadAudience,
        RejectReason::BadTokenType,
        RejectReason::MissingClaim,
        RejectReason::IatOutOfRange,
        RejectReason::InjectedAuth,
        RejectReason::UserContext,
        RejectReason::FactoryInitFailed,
        RejectReason::FactoryCritical,
        RejectReason::ServiceNotReady,
        RejectReason::WarmingUp,
        RejectReason::InternalError,
    ];

    /// The stable name in stats.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::NoToken => "no_token",
            RejectReason::Malformed => "malformed_token",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UnsupportedAlgorithm => "unsupported_algorithm",
            RejectReason::Expired => "expired",
            RejectReason::BadIssuer => "bad_issuer",
            RejectReason::BadAudience => "bad_audience",
            RejectReason::BadTokenType => "bad_token_type",
            RejectReason::MissingClaim => "missing_claim",
            RejectReason::IatOutOfRange => "iat_out_of_range",
            RejectReason::InjectedAuth => "injected_auth",
            RejectReason::UserContext => "user_context",
            RejectReason::FactoryInitFailed => "factory_init_failed",
            RejectReason::FactoryCritical => "factory_critical",
            RejectReason::ServiceNotReady => "service_not_ready",
            RejectReason::WarmingUp => "warming_up",
            RejectReason::InternalError => "internal_error",
        }
    }

    /// Is this an authentication failure (close 1008 or a handshake 401/403)?
    pub fn is_auth(self) -> bool {
        (self as usize) <= RejectReason::InjectedAuth as usize
    }
}

/// Live counters. Every field only grows, so a snapshot is a consistent-enough reading.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub established: AtomicU64,
    pub closed: AtomicU64,
    rejected: [AtomicU64; 17],
    pub pipelines_started: AtomicU64,
    pub pipelines_completed: AtomicU64,
    pub pipelines_dropped: AtomicU64,
    pub pipelines_aborted: AtomicU64,
    events_sent: [AtomicU64; 5],
    pub frames_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub oversize_dropped: AtomicU64,
    pub invalid_json: AtomicU64,
    pub binary_frames: AtomicU64,
    pub pongs: AtomicU64,
    pub acks: AtomicU64,
    pub keepalive_timeouts: AtomicU64,
    pub keepalive_pongs: AtomicU64,
    pub send_timeouts: AtomicU64,
    pub too_large_closes: AtomicU64,
    pub invalid_utf8_closes: AtomicU64,
    faults: [AtomicU64; 13],
    http: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    users: Mutex<HashMap<String, Arc<UserCounters>>>,
    peers: Mutex<BTreeMap<IpAddr, u64>>,
    peers_other: AtomicU64,
}

/// Most distinct peer addresses counted by name; connections from further ones are counted
/// under `other`.
pub const MAX_PEERS: usize = 256;

/// One user's live counters (the user is a token's `sub`). A connection looks its user up
/// once, when its token is validated, and counts on the handle from then on.
#[derive(Debug, Default)]
pub struct UserCounters {
    connections: AtomicU64,
    established: AtomicU64,
    rejected: AtomicU64,
    pipelines: AtomicU64,
}

impl UserCounters {
    /// One more connection of this user got its confirmation frame.
    pub fn established(&self) {
        inc(&self.established);
    }

    /// One more connection of this user was refused after its token was validated.
    pub fn rejected(&self) {
        inc(&self.rejected);
    }

    /// One more agent run started on a connection of this user.
    pub fn pipeline(&self) {
        inc(&self.pipelines);
    }

    fn totals(&self) -> UserTotals {
        UserTotals {
            connections: get(&self.connections),
            established: get(&self.established),
            rejected: get(&self.rejected),
            pipelines: get(&self.pipelines),
        }
    }
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Stats {
    /// One more connection refused for `reason`.
    pub fn reject(&self, reason: RejectReason) {
        inc(&self.rejected[reason as usize]);
    }

    /// One more `event` written to a socket.
    pub fn event_sent(&self, event: AgentEvent) {
        inc(&self.events_sent[event as usize]);
    }

    /// One more injected `fault`.
    pub fn fault(&self, fault: FaultKind) {
        inc(&self.faults[fault as usize]);
    }

    /// One more connection whose token was validated for user `sub`: counts it and returns
    /// the user's counters for the rest of the connection.
    pub fn user_connection(&self, sub: &str) -> Arc<UserCounters> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let user = match users.get(sub) {
            Some(user) => Arc::clone(user),
            None => {
                let user = Arc::new(UserCounters::default());
                users.insert(sub.to_owned(), Arc::clone(&user));
                user
            }
        };
        drop(users);
        inc(&user.connections);
        user
    }

    /// One more TCP connection accepted from `peer` (WebSocket or HTTP).
    pub fn peer(&self, peer: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&peer) {
            *n += 1;
        } else if peers.len() < MAX_PEERS {
            peers.insert(peer, 1);
        } else {
            inc(&self.peers_other);
        }
    }

    /// One more HTTP answer; `path` is one of the testbed's routes or "other".
    pub fn http(&self, path: &str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        *http
            .entry(path.to_owned())
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// A JSON-ready reading of every counter.
    pub fn snapshot(&self, factory: FactorySnapshot, capacity: CapacitySnapshot) -> StatsSnapshot {
        let rejected: BTreeMap<String, u64> = RejectReason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), get(&self.rejected[*r as usize])))
            .filter(|(_, n)| *n > 0)
            .collect();
        let auth_rejected = RejectReason::ALL
            .iter()
            .filter(|r| r.is_auth())
            .map(|r| get(&self.rejected[*r as usize]))
            .sum();
        let established = get(&self.established);
        let closed = get(&self.closed);
        StatsSnapshot {
            connections: ConnectionStats {
                accepted: get(&self.accepted),
                established,
                closed,
                open: established.saturating_sub(closed),
                rejected_total: rejected.values().sum(),
                auth_rejected,
                rejected,
            },
            pipelines: PipelineStats {
                started: get(&self.pipelines_started),
                completed: get(&self.pipelines_completed),
                dropped: get(&self.pipelines_dropped),
                aborted: get(&self.pipelines_aborted),
            },
            capacity,
            events_sent: AgentEvent::ORDER
                .iter()
                .map(|e| (e.name().to_owned(), get(&self.events_sent[*e as usize])))
                .collect(),
            frames: FrameStats {
                received: get(&self.frames_received),
                sent: get(&self.frames_sent),
                oversize_dropped: get(&self.oversize_dropped),
                invalid_json: get(&self.invalid_json),
                binary: get(&self.binary_frames),
                pongs: get(&self.pongs),
                acks: get(&self.acks),
                keepalive_timeouts: get(&self.keepalive_timeouts),
                keepalive_pongs: get(&self.keepalive_pongs),
                send_timeouts: get(&self.send_timeouts),
                too_large_closes: get(&self.too_large_closes),
                invalid_utf8_closes: get(&self.invalid_utf8_closes),
            },
            faults: FaultKind::ALL
                .iter()
                .map(|f| (f.name().to_owned(), get(&self.faults[*f as usize])))
                .collect(),
            http: self.http.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            managers: factory,
            users: self
                .users
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(sub, user)| (sub.clone(), user.totals()))
                .collect(),
            peers: {
                let mut peers: BTreeMap<String, u64> = self
                    .peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(ip, n)| (ip.to_string(), *n))
                    .collect();
                let other = get(&self.peers_other);
                if other > 0 {
                    peers.insert("other".into(), other);
                }
                peers
            },
        }
    }
}

/// `GET /__testbed/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct StatsSnapshot {
    /// WebSocket connections.
    pub connections: ConnectionStats,
    /// Agent pipelines.
    pub pipelines: PipelineStats,
    /// The testbed-wide run limit (`pipeline.concurrency`) and who waited for it.
    #[serde(default)]
    pub capacity: CapacitySnapshot,
    /// Agent events written to sockets, by type (all five always present).
    pub events_sent: BTreeMap<String, u64>,
    /// Frames.
    pub frames: FrameStats,
    /// Injected faults by kind (all kinds always present).
    pub faults: BTreeMap<String, u64>,
    /// HTTP answers: path -> status -> count.
    pub http: BTreeMap<String, BTreeMap<u16, u64>>,
    /// The manager factory.
    pub managers: FactorySnapshot,
    /// Totals per user (token `sub`), for every user whose token was ever validated.
    #[serde(default)]
    pub users: BTreeMap<String, UserTotals>,
    /// TCP connections accepted (WebSocket and HTTP), by the client's source address (at most
    /// [`MAX_PEERS`] addresses by name; connections from further ones under `other`).
    #[serde(default)]
    pub peers: BTreeMap<String, u64>,
}

/// One user's totals since the testbed started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserTotals {
    /// Upgrade requests whose token was valid for this user (the user's connection numbers,
    /// which key its fault draws, run from 0 to this count).
    pub connections: u64,
    /// Of those, connections that got their confirmation frame.
    pub established: u64,
    /// Of those, connections refused after the token was validated: the `auth_reject` fault,
    /// connection faults, the factory's limit.
    pub rejected: u64,
    /// Agent runs started on this user's connections.
    pub pipelines: u64,
}

/// Connection figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConnectionStats {
    /// Upgrade requests received on `/ws` and `/websocket`.
    pub accepted: u64,
    /// Connections that got their confirmation frame.
    pub established: u64,
    /// Established connections that have ended.
    pub closed: u64,
    /// Established connections still open.
    pub open: u64,
    /// Refused connections, all reasons.
    pub rejected_total: u64,
    /// Of those, authentication failures (1008 or handshake 401/403), injected ones included.
    pub auth_rejected: u64,
    /// Refused connections by reason (reasons with a zero count left out).
    pub rejected: BTreeMap<String, u64>,
}

/// Pipeline figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PipelineStats {
    /// Pipelines started by `start_agent` / `user_message` and aliases (a run waiting for
    /// capacity counts when it starts; one abandoned while waiting never does).
    pub started: u64,
    /// Pipelines whose last event was written.
    pub completed: u64,
    /// Pipelines cut by the `tcp_drop` fault.
    pub dropped: u64,
    /// Pipelines cut because the connection ended first.
    pub aborted: u64,
}

/// Frame figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct FrameStats {
    /// Data frames received (text and binary).
    pub received: u64,
    /// Text frames sent.
    pub sent: u64,
    /// Text frames over `max_frame_bytes`, silently dropped.
    pub oversize_dropped: u64,
    /// Frames that were not JSON objects with a `type` (answered FORMAT_ERROR).
    pub invalid_json: u64,
    /// Binary frames (answered FORMAT_ERROR).
    pub binary: u64,
    /// `pong` frames sent.
    pub pongs: u64,
    /// `ack` frames sent.
    pub acks: u64,
    /// Connections closed because a keepalive ping went unanswered.
    pub keepalive_timeouts: u64,
    /// WebSocket pongs received (answers to the keepalive pings).
    pub keepalive_pongs: u64,
    /// Connections ended because the client did not take a frame in time.
    pub send_timeouts: u64,
    /// Connections closed 1009 for a message over `max_message_bytes`.
    pub too_large_closes: u64,
    /// Connections closed 1007 for a text frame that is not UTF-8.
    pub invalid_utf8_closes: u64,
}
