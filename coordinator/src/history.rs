//! Run history: every run's report and plan (secrets redacted) in an embedded SQLite database,
//! so runs can be listed, shown, re-rendered and compared cycle after cycle. Report files are
//! always written before the database is touched: a broken database never loses a run.

use std::path::{Path, PathBuf};

use gauntlet_core::redact;
use gauntlet_core::report::Report;
use rusqlite::{Connection, OptionalExtension, params};

/// A history database that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Opening, reading or writing failed (corrupt, locked, not a database...).
    #[error("run history {path}: {message}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said, in words.
        message: String,
    },
    /// No run has this id.
    #[error("no run `{0}` in the history")]
    NotFound(String),
    /// The run has no report: it is still running, or its coordinator stopped mid-run.
    #[error("run `{0}` has no report: it is {1}")]
    NoReport(String, String),
    /// A stored report does not parse (written by an incompatible version).
    #[error("run `{0}`: its stored report cannot be read: {1}")]
    BadReport(String, String),
}

/// One line of `gauntlet history`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// Plan name.
    pub plan: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// pass / fail / error.
    pub verdict: String,
    /// Sessions started.
    pub sessions: u64,
    /// Sessions failed.
    pub failed: u64,
}

/// The history store.
#[derive(Debug)]
pub struct History {
    conn: Connection,
    path: PathBuf,
}

/// The default database path: `$GAUNTLET_HISTORY`, else `$XDG_DATA_HOME/gauntlet/history.db`,
/// else `~/.local/share/gauntlet/history.db`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("GAUNTLET_HISTORY") {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("gauntlet").join("history.db")
}

impl History {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let err = |e: &dyn std::fmt::Display| HistoryError::Database {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| err(&e))?;
        // Wait a little for another writer instead of failing at once; then say "locked".
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| err(&e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY,
                plan TEXT NOT NULL,
                plan_hash TEXT NOT NULL,
                started_at TEXT NOT NULL,
                verdict TEXT NOT NULL,
                sessions INTEGER NOT NULL,
                failed INTEGER NOT NULL,
                plan_toml TEXT NOT NULL,
                report_json TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS runs_by_plan ON runs (plan, started_at);",
        )
        .map_err(|e| err(&e))?;
        Ok(History {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> HistoryError {
        HistoryError::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Stores a finished run with its plan (redacted here, [`redact::plan_toml`]).
    pub fn store(&self, report: &Report, plan_toml: &str) -> Result<(), HistoryError> {
        let json = serde_json::to_string(report)
            .map_err(|e| HistoryError::BadReport(report.run_id.clone(), e.to_string()))?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    report.run_id,
                    report.plan.name,
                    report.plan.hash,
                    report.started_at,
                    // A run its coordinator abandoned is not a verdict on the target.
                    if report.verdict_cause == gauntlet_core::words::Cause::Interrupted {
                        "interrupted"
                    } else {
                        report.verdict.as_str()
                    },
                    report.totals.sessions as i64,
                    report.totals.failed as i64,
                    redact::plan_toml(plan_toml),
                    json
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a run that just started (verdict `running`), so a coordinator that dies mid-run
    /// leaves a trace.
    pub fn store_started(
        &self,
        run_id: &str,
        plan: &str,
        started_at: &str,
        plan_toml: &str,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs VALUES (?1, ?2, '', ?3, 'running', 0, 0, ?4, '')",
                params![run_id, plan, started_at, redact::plan_toml(plan_toml)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks runs left `running` by an earlier coordinator as `interrupted`; returns how many.
    pub fn mark_interrupted(&self) -> Result<usize, HistoryError> {
        self.conn
            .execute(
                "UPDATE runs SET verdict = 'interrupted' WHERE verdict = 'running'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    /// Runs, newest first, optionally of one plan.
    pub fn list(&self, plan: Option<&str>, limit: usize) -> Result<Vec<RunRow>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, plan, started_at, verdict, sessions, failed FROM runs
                 WHERE (?1 IS NULL OR plan = ?1) ORDER BY started_at DESC, run_id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![plan, limit as i64], |r| {
                Ok(RunRow {
                    run_id: r.get(0)?,
                    plan: r.get(1)?,
                    started_at: r.get(2)?,
                    verdict: r.get(3)?,
                    sessions: r.get::<_, i64>(4)? as u64,
                    failed: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The report of run `id`.
    pub fn report(&self, id: &str) -> Result<Report, HistoryError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT report_json FROM runs WHERE run_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let json = json.ok_or_else(|| HistoryError::NotFound(id.to_owned()))?;
        if json.is_empty() {
            let verdict: String = self
                .conn
                .query_row(
                    "SELECT verdict FROM runs WHERE run_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            return Err(HistoryError::NoReport(id.to_owned(), verdict));
        }
        serde_json::from_str(&json)
            .map_err(|e| HistoryError::BadReport(id.to_owned(), e.to_string()))
    }

    /// The stored (redacted) plan of run `id`.
    pub fn plan(&self, id: &str) -> Result<String, HistoryError> {
        self.conn
            .query_row(
                "SELECT plan_toml FROM runs WHERE run_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| HistoryError::NotFound(id.to_owned()))
    }

    /// The run of `plan` before `run_id` (by start time), if any.
    pub fn previous(&self, plan: &str, run_id: &str) -> Result<Option<Report>, HistoryError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT run_id FROM runs WHERE plan = ?1 AND run_id != ?2 AND report_json != ''
                 AND started_at <= COALESCE((SELECT started_at FROM runs WHERE run_id = ?2), '9999')
                 ORDER BY started_at DESC, run_id DESC LIMIT 1",
                params![plan, run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        id.map(|id| self.report(&id)).transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secret_looking_values_are_redacted_and_key_sources_kept() {
        let path = std::env::temp_dir().join(format!("gauntlet-redact-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let h = History::open(&path).unwrap();
        let plan = "name = \"p\"\n[target]\nbase_url = \"https://u:pw@h/?access_key=ak\"\nheaders = { Authorization = \"Bearer abc\", \"X-Stage\" = \"eu\", Api-Key = \"k2\", X-Auth = \"k3\", Ocp-Apim-Subscription-Key = \"k4\" }\n[auth]\nsecret_env = \"JWT_SECRET_KEY\"\nclaims = { api_key = \"k\" }\n";
        h.store_started("run-1", "p", "2026-11-21T00:00:00Z", plan)
            .unwrap();
        let r = h.plan("run-1").unwrap();
        for secret in ["Bearer abc", "\"k\"", "k2", "k3", "k4", "u:pw", "=ak"] {
            assert!(!r.contains(secret), "{secret}: {r}");
        }
        assert!(r.contains("JWT_SECRET_KEY") && r.contains("eu"), "{r}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn runs_left_running_become_interrupted() {
        let path =
            std::env::temp_dir().join(format!("gauntlet-interrupted-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let h = History::open(&path).unwrap();
        h.store_started("run-1", "p", "2026-11-21T00:00:00Z", "name = \"p\"")
            .unwrap();
        assert_eq!(h.list(None, 10).unwrap()[0].verdict, "running");
        drop(h);
        let h = History::open(&path).unwrap();
        assert_eq!(h.mark_interrupted().unwrap(), 1);
        assert_eq!(h.list(None, 10).unwrap()[0].verdict, "interrupted");
        let e = h.report("run-1").unwrap_err().to_string();
        assert!(e.contains("no report: it is interrupted"), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_corrupt_database_is_reported_clearly() {
        let path = std::env::temp_dir().join(format!("gauntlet-corrupt-{}.db", std::process::id()));
        std::fs::write(
            &path,
            b"this is not a database, just text that fills a page or so",
        )
        .unwrap();
        let e = History::open(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("not a database"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }
}
