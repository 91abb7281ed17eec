//! Snapshots to and from the wire: histograms as HdrHistogram V2 + deflate bytes (never as
//! percentiles, so the coordinator's merge is exact), counters, failure patterns and checks.

use gauntlet_core::metrics::{CheckStats, Counters, FailureKey, FailureStats, Snapshot};
use gauntlet_core::words::FailureCategory;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::v1;

/// A snapshot that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A histogram's bytes are not a V2 + deflate HdrHistogram.
    #[error("histogram `{name}` cannot be decoded: {message}")]
    Histogram {
        /// Its metric name.
        name: String,
        /// Why.
        message: String,
    },
}

/// Encodes `s` as snapshot `seq` of `run_id`, taken `at_ms` into the run.
pub fn snapshot_to_proto(
    s: &Snapshot,
    run_id: &str,
    seq: u64,
    at_ms: u64,
    active_vus: u64,
) -> v1::Snapshot {
    let mut serializer = V2DeflateSerializer::new();
    let histograms = s
        .histograms
        .iter()
        .filter_map(|(name, h)| {
            let mut bytes = Vec::new();
            // Serializing into a Vec cannot fail for a valid histogram; skip one that does.
            serializer.serialize(h, &mut bytes).ok()?;
            Some(v1::NamedHistogram {
                name: name.clone(),
                v2_deflate: bytes,
            })
        })
        .collect();
    v1::Snapshot {
        run_id: run_id.to_owned(),
        seq,
        at_ms,
        histograms,
        counters: Some(counters_to_proto(&s.counters)),
        failures: s
            .failures
            .iter()
            .map(|(k, v)| v1::FailurePattern {
                category: k.category.to_string(),
                detail: k.detail.clone(),
                scenario: k.scenario.clone(),
                step: k.step.clone(),
                count: v.count,
                first_ms: v.first_ms,
                last_ms: v.last_ms,
                samples: v.samples.clone(),
            })
            .collect(),
        checks: s
            .checks
            .iter()
            .map(|(name, c)| v1::CheckResult {
                name: name.clone(),
                run: c.run,
                failed: c.failed,
            })
            .collect(),
        active_vus,
    }
}

/// The largest histogram accepted from a peer, compressed or inflated
/// ([`gauntlet_core::hdr::MAX_BYTES`]).
pub const MAX_HISTOGRAM_BYTES: usize = gauntlet_core::hdr::MAX_BYTES;
/// The highest value a peer's histogram may track ([`gauntlet_core::hdr::MAX_VALUE_US`]).
pub const MAX_HISTOGRAM_VALUE_US: u64 = gauntlet_core::hdr::MAX_VALUE_US;

/// The most histograms, failure patterns and checks one snapshot may carry: far more than a
/// plan names (every step has a metric and a check), bounded so that no peer sizes the
/// coordinator's memory.
pub const MAX_SNAPSHOT_ENTRIES: usize = 4096;

/// Decodes a snapshot.
pub fn snapshot_from_proto(p: &v1::Snapshot) -> Result<Snapshot, ConvertError> {
    for (what, n) in [
        ("histograms", p.histograms.len()),
        ("failure patterns", p.failures.len()),
        ("checks", p.checks.len()),
    ] {
        if n > MAX_SNAPSHOT_ENTRIES {
            return Err(ConvertError::Histogram {
                name: what.into(),
                message: format!("{n} {what} in one snapshot (at most {MAX_SNAPSHOT_ENTRIES})"),
            });
        }
    }
    let mut s = Snapshot::default();
    let mut deserializer = Deserializer::new();
    for h in &p.histograms {
        // Decoded within bounds: a peer's headers are not trusted (gauntlet_core::hdr).
        let histogram =
            gauntlet_core::hdr::decode(&mut deserializer, &h.v2_deflate).map_err(|e| {
                ConvertError::Histogram {
                    name: h.name.clone(),
                    message: e.to_string(),
                }
            })?;
        let mut one = Snapshot::default();
        one.histograms.insert(h.name.clone(), histogram);
        s.merge(&one);
    }
    s.counters = p
        .counters
        .as_ref()
        .map(counters_from_proto)
        .unwrap_or_default();
    for f in &p.failures {
        let key = FailureKey {
            category: FailureCategory::named(&f.category),
            detail: f.detail.clone(),
            scenario: f.scenario.clone(),
            step: f.step.clone(),
        };
        let stats = FailureStats {
            count: f.count,
            first_ms: f.first_ms,
            last_ms: f.last_ms,
            samples: f
                .samples
                .iter()
                .take(gauntlet_core::metrics::SAMPLES_PER_PATTERN)
                // A peer's samples are not trusted to be redacted: masked here again.
                .map(|x| gauntlet_core::metrics::sample(x.clone()))
                .collect(),
        };
        match s.failures.get_mut(&key) {
            Some(mine) => mine.add(&stats),
            None => {
                s.failures.insert(key, stats);
            }
        }
    }
    for c in &p.checks {
        let mine = s
            .checks
            .entry(c.name.clone())
            .or_insert_with(CheckStats::default);
        mine.run = mine.run.saturating_add(c.run);
        mine.failed = mine.failed.saturating_add(c.failed);
    }
    Ok(s)
}

/// Counters to the wire.
pub fn counters_to_proto(c: &Counters) -> v1::Counters {
    v1::Counters {
        sessions_started: c.sessions_started,
        sessions_passed: c.sessions_passed,
        sessions_failed: c.sessions_failed,
        sessions_interrupted: c.sessions_interrupted,
        dropped_arrivals: c.dropped_arrivals,
        frames_sent: c.frames_sent,
        frames_received: c.frames_received,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        checks_run: c.checks_run,
        checks_failed: c.checks_failed,
    }
}

/// Counters from the wire.
pub fn counters_from_proto(c: &v1::Counters) -> Counters {
    Counters {
        sessions_started: c.sessions_started,
        sessions_passed: c.sessions_passed,
        sessions_failed: c.sessions_failed,
        sessions_interrupted: c.sessions_interrupted,
        dropped_arrivals: c.dropped_arrivals,
        frames_sent: c.frames_sent,
        frames_received: c.frames_received,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        checks_run: c.checks_run,
        checks_failed: c.checks_failed,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gauntlet_core::metrics::histogram;

    #[test]
    fn a_snapshot_survives_the_wire_exactly() {
        let mut s = Snapshot::default();
        let mut h = histogram();
        for v in [1u64, 7, 950, 12_345, 3_600_000_000] {
            h.record(v).unwrap();
        }
        s.histograms.insert("ws.handshake".into(), h.clone());
        s.counters.sessions_passed = 3;
        s.counters.dropped_arrivals = 2;
        s.failures.insert(
            FailureKey {
                category: "timeout".into(),
                detail: "x".into(),
                scenario: "s".into(),
                step: "t".into(),
            },
            FailureStats::one(42, "sample".into()),
        );
        s.checks
            .insert("s/t".into(), CheckStats { run: 5, failed: 1 });
        let wire = snapshot_to_proto(&s, "run-1", 9, 1000, 4);
        assert_eq!((wire.seq, wire.at_ms, wire.active_vus), (9, 1000, 4));
        let back = snapshot_from_proto(&wire).unwrap();
        let b = &back.histograms["ws.handshake"];
        assert_eq!(b.len(), h.len());
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(b.value_at_quantile(q), h.value_at_quantile(q));
        }
        assert_eq!(back.counters, s.counters);
        assert_eq!(back.failures, s.failures);
        assert_eq!(back.checks, s.checks);
    }

    #[test]
    fn a_peers_samples_are_masked_again() {
        let mut wire = snapshot_to_proto(&Snapshot::default(), "run-1", 1, 10, 0);
        wire.failures.push(v1::FailurePattern {
            category: "auth_rejected".into(),
            detail: "403".into(),
            scenario: "s".into(),
            step: "ws_connect".into(),
            count: 1,
            first_ms: 5,
            last_ms: 5,
            samples: vec![
                "HTTP 403 {\"api_key\":\"k-123\",\"echo\":\"Bearer eyJhbGciOi.eyJzdWIiOi.c2ln\"}"
                    .into(),
            ],
        });
        let back = snapshot_from_proto(&wire).unwrap();
        let stats = back.failures.values().next().unwrap();
        assert_eq!(
            stats.samples,
            vec!["HTTP 403 {\"api_key\":\"<redacted>\",\"echo\":\"Bearer <redacted>\"}"]
        );
    }

    #[test]
    fn corrupt_histogram_bytes_are_an_error_not_a_panic() {
        let wire = v1::Snapshot {
            histograms: vec![v1::NamedHistogram {
                name: "m".into(),
                v2_deflate: vec![1, 2, 3, 4, 5],
            }],
            ..v1::Snapshot::default()
        };
        assert!(snapshot_from_proto(&wire).is_err());
    }
}
