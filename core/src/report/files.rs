//! Writing a run's report files: `report.json` first (the figures are safe before anything
//! else is attempted), then `report.md`, `report.html` and `junit.xml`, into one folder.

use std::path::{Path, PathBuf};

use super::{Report, html, junit, markdown};
use crate::compare::compare;

/// A report file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct FilesError {
    /// The file (or folder).
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Writes `report.json`, `report.md`, `report.html` and `junit.xml` into `dir` (created if
/// need be); report.md and report.html compare with `previous` when given. Returns the path of
/// report.json.
pub fn write(
    dir: &Path,
    report: &Report,
    previous: Option<&Report>,
) -> Result<PathBuf, FilesError> {
    std::fs::create_dir_all(dir).map_err(|source| FilesError {
        path: dir.to_owned(),
        source,
    })?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| FilesError {
            path: path.clone(),
            source,
        })?;
        Ok::<_, FilesError>(path)
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| FilesError {
        path: dir.join("report.json"),
        source: std::io::Error::other(e),
    })?;
    let json = write("report.json", &json)?;
    let comparison = previous.map(|p| compare(p, report));
    write("report.md", &markdown::render(report, comparison.as_ref()))?;
    write("report.html", &html::render(report, comparison.as_ref()))?;
    write("junit.xml", &junit::render(report))?;
    Ok(json)
}
