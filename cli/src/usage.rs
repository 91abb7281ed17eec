//! Input that cannot work (exit code 2): flag combinations, flag values, files named on the
//! command line that cannot be read.

use std::path::Path;

/// A flag combination or value that cannot work (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Reads a PEM file given on the command line.
pub fn read_pem(path: Option<&Path>) -> Result<Option<Vec<u8>>, UsageError> {
    path.map(|p| {
        std::fs::read(p).map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))
    })
    .transpose()
}
