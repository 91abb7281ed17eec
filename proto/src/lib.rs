//! gauntlet-proto: the generated gRPC code for `gauntlet.proto` and conversions between its
//! messages and the core types (snapshots travel with HdrHistogram V2 + deflate bytes).

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("gauntlet.v1");
}

/// Wire protocol version; a worker with another is refused at `Register`.
pub const PROTOCOL_VERSION: u32 = 7;

/// While it runs a share, a worker heartbeats at least this often, each heartbeat carrying the
/// share's live counts ([`v1::ShareProgress`]); a lost worker's unreported sessions are bounded
/// by what it could start in one such interval after it was last heard from.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The largest message a run client accepts from the coordinator (the last progress message
/// carries the report): 256 MiB.
pub const MAX_REPORT_BYTES: usize = 256 << 20;

pub mod auth;
mod convert;
pub use convert::{
    ConvertError, MAX_CATEGORIES_PER_VALUE, MAX_HISTOGRAM_BYTES, MAX_HISTOGRAM_VALUE_US,
    MAX_SNAPSHOT_ENTRIES, MAX_START_INTERVAL, counters_from_proto, counters_to_proto,
    delta_from_proto, snapshot_from_proto, snapshot_to_proto,
};
