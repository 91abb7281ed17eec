//! The process's open-files limit: every connection is a file, so it is raised to the hard
//! limit before a run, with a warning when the plan's VUs cannot all hold a connection.

/// Raises this process's open-files limit to its hard limit (every connection is a file) and
/// warns when the plan's VUs cannot all hold a connection within it.
pub fn check_open_files(vus: u64) {
    // Room for the runtime, logs and HTTP connections besides one socket per VU.
    const SPARE: u64 = 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if vus + SPARE > limit => errln!(
            "warning: this process may open {limit} files, but the plan runs up to {vus} VUs \
             with a connection each: sessions beyond the limit will fail to connect \
             (\"Too many open files\"). Raise the hard limit (ulimit -Hn) or split the load \
             across workers."
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read or raise the open-files limit"),
    }
}
