//! gauntlet-proto: the generated gRPC code for `gauntlet.proto` and conversions between its
//! messages and the core types (snapshots travel with HdrHistogram V2 + deflate bytes).

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("gauntlet.v1");
}

/// Wire protocol version; a worker with another is refused at `Register`.
pub const PROTOCOL_VERSION: u32 = 1;

pub mod auth;
mod convert;
pub use convert::{
    ConvertError, counters_from_proto, counters_to_proto, snapshot_from_proto, snapshot_to_proto,
};
