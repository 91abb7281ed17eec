//! Snapshots to and from the wire: histograms as HdrHistogram V2 + deflate bytes (never as
//! percentiles, so the coordinator's merge is exact), counters, failure patterns, checks and
//! failure attribution.

use std::collections::BTreeMap;

use gauntlet_core::attribution::{
    Attribution, MAX_LEVEL, Outcomes, Table, VALUE_BYTES, WORKER_STARTS, WORKER_SUBJECTS,
    WORKER_TARGETS,
};
use gauntlet_core::metrics::{CheckStats, Counters, FailureKey, FailureStats, Snapshot};
use gauntlet_core::sparse::{Delta, Sparse};
use gauntlet_core::words::FailureCategory;
use hdrhistogram::serialization::Deserializer;

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
    /// The failure attribution is not one a worker sends (too many values, too long, twice
    /// the same, empty, beyond the largest count).
    #[error("attribution: {0}")]
    Attribution(String),
}

/// Encodes `s` as snapshot `seq` of `run_id`, taken `at_ms` into the run.
pub fn snapshot_to_proto(
    s: &Snapshot,
    run_id: &str,
    seq: u64,
    at_ms: u64,
    active_vus: u64,
) -> v1::Snapshot {
    let histograms = s
        .histograms
        .iter()
        .filter_map(|(name, h)| {
            // Serializing into a Vec cannot fail for a valid histogram; skip one that does.
            Some(v1::NamedHistogram {
                name: name.clone(),
                v2_deflate: gauntlet_core::hdr::encode_stored(h)?,
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
        attribution: Some(attribution_to_proto(&s.attribution)),
    }
}

/// The largest histogram accepted from a peer, compressed or inflated
/// ([`gauntlet_core::hdr::MAX_BYTES`]).
pub const MAX_HISTOGRAM_BYTES: usize = gauntlet_core::hdr::MAX_BYTES;
/// The highest value a peer's histogram may track ([`gauntlet_core::hdr::MAX_VALUE_US`]).
pub const MAX_HISTOGRAM_VALUE_US: u64 = gauntlet_core::hdr::MAX_VALUE_US;

fn outcomes_to_proto(o: &Outcomes) -> v1::Outcomes {
    v1::Outcomes {
        passed: o.passed,
        failed: o
            .failed
            .iter()
            .map(|(c, n)| v1::CategoryCount {
                category: c.to_string(),
                count: *n,
            })
            .collect(),
    }
}

fn valued<K: Ord>(t: &Table<K>, value: impl Fn(&K) -> String) -> Vec<v1::Valued> {
    t.values
        .iter()
        .map(|(k, o)| v1::Valued {
            value: value(k),
            outcomes: Some(outcomes_to_proto(o)),
        })
        .collect()
}

fn leveled(t: &Table<u64>) -> Vec<v1::Leveled> {
    t.values
        .iter()
        .map(|(k, o)| v1::Leveled {
            level: *k,
            outcomes: Some(outcomes_to_proto(o)),
        })
        .collect()
}

/// The four dimensions a worker carries (the coordinator fills `worker` and `interval`).
fn attribution_to_proto(a: &Attribution) -> v1::Attribution {
    v1::Attribution {
        subjects: valued(&a.subject, String::clone),
        subjects_untracked: Some(outcomes_to_proto(&a.subject.untracked)),
        targets: valued(&a.target, String::clone),
        targets_untracked: Some(outcomes_to_proto(&a.target.untracked)),
        live: leveled(&a.live),
        in_flight: leveled(&a.in_flight),
        started: leveled(&a.started),
        started_untracked: Some(outcomes_to_proto(&a.started.untracked)),
    }
}

/// The most categories one value's outcomes may name: far more than any plan's taxonomy and
/// classifiers in one interval, bounded so that no value sizes the coordinator's memory.
pub const MAX_CATEGORIES_PER_VALUE: usize = 256;

/// Decodes one value's outcomes: no category twice, no zero count, at least one session.
fn outcomes_from_proto(o: Option<&v1::Outcomes>, what: &str) -> Result<Outcomes, ConvertError> {
    let bad = |m: String| Err(ConvertError::Attribution(format!("{what}: {m}")));
    let Some(o) = o else {
        return Ok(Outcomes::default());
    };
    if o.failed.len() > MAX_CATEGORIES_PER_VALUE {
        return bad(format!(
            "{} categories (at most {MAX_CATEGORIES_PER_VALUE})",
            o.failed.len()
        ));
    }
    let mut out = Outcomes {
        passed: o.passed,
        failed: BTreeMap::new(),
    };
    for c in &o.failed {
        if c.count == 0 {
            return bad("a category counted 0 times".into());
        }
        if c.category.len() > 256 {
            return bad(format!("a category name of {} bytes", c.category.len()));
        }
        if out
            .failed
            .insert(FailureCategory::named(&c.category), c.count)
            .is_some()
        {
            return bad("a category counted twice".into());
        }
    }
    Ok(out)
}

/// Decodes a table of named values: at most `cap` of them, none longer than a worker cuts
/// them, none twice, none without a session.
fn table_from_proto(
    values: &[v1::Valued],
    untracked: Option<&v1::Outcomes>,
    cap: usize,
    what: &str,
) -> Result<Table<String>, ConvertError> {
    if values.len() > cap {
        return Err(ConvertError::Attribution(format!(
            "{} {what} values in one snapshot (a worker tracks at most {cap})",
            values.len()
        )));
    }
    let mut t = Table::default();
    for v in values {
        if v.value.len() > VALUE_BYTES + '…'.len_utf8() {
            return Err(ConvertError::Attribution(format!(
                "a {what} of {} bytes (workers cut them to {VALUE_BYTES})",
                v.value.len()
            )));
        }
        let o = outcomes_from_proto(v.outcomes.as_ref(), what)?;
        if o.sessions() == 0 {
            return Err(ConvertError::Attribution(format!(
                "a {what} without any session"
            )));
        }
        if t.values.insert(v.value.clone(), o).is_some() {
            return Err(ConvertError::Attribution(format!("the same {what} twice")));
        }
    }
    t.untracked = outcomes_from_proto(untracked, what)?;
    Ok(t)
}

/// The latest interval index a session may have connected in: far past any run's length
/// (intake checks it against the run's time).
pub const MAX_START_INTERVAL: u64 = 1 << 32;

/// Decodes a table of counts: each at most `max`, none twice, none without a session.
fn levels_from_proto(
    levels: &[v1::Leveled],
    max: u64,
    what: &str,
) -> Result<Table<u64>, ConvertError> {
    let mut t = Table::default();
    for l in levels {
        if l.level > max {
            return Err(ConvertError::Attribution(format!(
                "a {what} of {} (workers send at most {max})",
                l.level
            )));
        }
        let o = outcomes_from_proto(l.outcomes.as_ref(), what)?;
        if o.sessions() == 0 {
            return Err(ConvertError::Attribution(format!(
                "a {what} without any session"
            )));
        }
        if t.values.insert(l.level, o).is_some() {
            return Err(ConvertError::Attribution(format!("the same {what} twice")));
        }
    }
    Ok(t)
}

/// Decodes the four carried dimensions within bounds.
fn attribution_from_proto(a: Option<&v1::Attribution>) -> Result<Attribution, ConvertError> {
    let Some(a) = a else {
        return Ok(Attribution::default());
    };
    // The level tables have at most MAX_LEVEL + 1 distinct values: checked before decoding.
    for (what, n, cap) in [
        ("live counts", a.live.len(), MAX_LEVEL as usize + 1),
        (
            "in-flight counts",
            a.in_flight.len(),
            MAX_LEVEL as usize + 1,
        ),
        ("connect intervals", a.started.len(), WORKER_STARTS),
    ] {
        if n > cap {
            return Err(ConvertError::Attribution(format!(
                "{n} {what} in one snapshot (at most {cap})"
            )));
        }
    }
    Ok(Attribution {
        subject: table_from_proto(
            &a.subjects,
            a.subjects_untracked.as_ref(),
            WORKER_SUBJECTS,
            "subject",
        )?,
        target: table_from_proto(
            &a.targets,
            a.targets_untracked.as_ref(),
            WORKER_TARGETS,
            "target",
        )?,
        live: levels_from_proto(&a.live, MAX_LEVEL, "live count")?,
        in_flight: levels_from_proto(&a.in_flight, MAX_LEVEL, "in-flight count")?,
        started: {
            let mut t = levels_from_proto(&a.started, MAX_START_INTERVAL, "connect interval")?;
            t.untracked = outcomes_from_proto(a.started_untracked.as_ref(), "connect interval")?;
            t
        },
        ..Attribution::default()
    })
}

/// The most histograms, failure patterns and checks one snapshot may carry: far more than a
/// plan names (every step has a metric and a check), bounded so that no peer sizes the
/// coordinator's memory.
pub const MAX_SNAPSHOT_ENTRIES: usize = 4096;

/// Decodes a snapshot.
pub fn snapshot_from_proto(p: &v1::Snapshot) -> Result<Snapshot, ConvertError> {
    let mut s = rest_from_proto(p)?;
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
        // A name sent twice adds up; the first is kept as it came (no copy).
        match s.histograms.get_mut(&h.name) {
            Some(mine) => {
                let _ = mine.add(&histogram);
            }
            None => {
                s.histograms.insert(h.name.clone(), histogram);
            }
        }
    }
    Ok(s)
}

/// Decodes a snapshot with its histograms as their non-zero counts (the coordinator's hot
/// path): the same checks as [`snapshot_from_proto`], the same figures, and a histogram name
/// sent twice is refused (which [`snapshot_from_proto`] adds up).
pub fn delta_from_proto(p: &v1::Snapshot) -> Result<Delta, ConvertError> {
    let rest = rest_from_proto(p)?;
    let mut histograms: BTreeMap<String, Sparse> = BTreeMap::new();
    for h in &p.histograms {
        let sparse = gauntlet_core::hdr::decode_sparse(&h.v2_deflate).map_err(|e| {
            ConvertError::Histogram {
                name: h.name.clone(),
                message: e.to_string(),
            }
        })?;
        if histograms.insert(h.name.clone(), sparse).is_some() {
            // Never from gauntlet's workers (the coordinator refuses it before decoding).
            return Err(ConvertError::Histogram {
                name: h.name.clone(),
                message: "sent twice in one snapshot".into(),
            });
        }
    }
    Ok(Delta { rest, histograms })
}

/// Everything of a snapshot but its histograms, every count of entries bounded.
fn rest_from_proto(p: &v1::Snapshot) -> Result<Snapshot, ConvertError> {
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
    let mut s = Snapshot {
        counters: p
            .counters
            .as_ref()
            .map(counters_from_proto)
            .unwrap_or_default(),
        ..Snapshot::default()
    };
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
        let mine: &mut CheckStats = s.checks.entry(c.name.clone()).or_default();
        mine.run = mine.run.saturating_add(c.run);
        mine.failed = mine.failed.saturating_add(c.failed);
    }
    s.attribution = attribution_from_proto(p.attribution.as_ref())?;
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
    fn a_histogram_sent_twice_is_refused_by_the_sparse_decoder() {
        let mut s = Snapshot::default();
        let mut h = histogram();
        h.record(5).unwrap();
        s.histograms.insert("session".into(), h);
        let mut wire = snapshot_to_proto(&s, "run-1", 1, 1000, 0);
        let delta = delta_from_proto(&wire).unwrap();
        assert_eq!(delta.histograms["session"].to_histogram().len(), 1);
        wire.histograms.push(wire.histograms[0].clone());
        match delta_from_proto(&wire) {
            Err(ConvertError::Histogram { name, message }) => {
                assert_eq!(name, "session");
                assert_eq!(message, "sent twice in one snapshot");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attribution_survives_the_wire_and_hostile_tables_are_refused() {
        use gauntlet_core::attribution::SessionTags;
        let mut s = Snapshot::default();
        let tags = |subject: &str, live| SessionTags {
            subject: Some(subject.into()),
            target: Some("127.0.0.1:8080".into()),
            live,
            in_flight: live + 1,
            started: Some(live),
        };
        s.attribution.record(&tags("user-1", 0), None);
        s.attribution.record(
            &tags("user-1", 2),
            Some(&FailureCategory::FactoryInitFailed),
        );
        s.attribution.record(
            &SessionTags {
                subject: None,
                ..tags("x", 0)
            },
            Some(&"manager_limit".into()),
        );
        let wire = snapshot_to_proto(&s, "run-1", 1, 1000, 0);
        let back = snapshot_from_proto(&wire).unwrap();
        assert_eq!(back.attribution, s.attribution);

        let refused = |edit: &dyn Fn(&mut v1::Attribution)| {
            let mut w = wire.clone();
            edit(w.attribution.as_mut().unwrap());
            match snapshot_from_proto(&w) {
                Err(ConvertError::Attribution(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        let m = refused(&|a| {
            a.subjects = (0..=WORKER_SUBJECTS)
                .map(|i| v1::Valued {
                    value: i.to_string(),
                    outcomes: Some(v1::Outcomes {
                        passed: 1,
                        failed: vec![],
                    }),
                })
                .collect()
        });
        assert!(m.contains("10001 subject values"), "{m}");
        let m = refused(&|a| a.subjects[0].value = "x".repeat(1000));
        assert!(m.contains("1000 bytes"), "{m}");
        let m = refused(&|a| a.live[0].level = MAX_LEVEL + 1);
        assert!(m.contains("1001"), "{m}");
        let m = refused(&|a| {
            let again = a.targets[0].clone();
            a.targets.push(again)
        });
        assert!(m.contains("the same target twice"), "{m}");
        let m = refused(&|a| a.started[0].level = u64::MAX);
        assert!(m.contains("connect interval"), "{m}");
        let m = refused(&|a| a.subjects[0].outcomes = None);
        assert!(m.contains("without any session"), "{m}");
        let m = refused(&|a| {
            a.live[0].outcomes.as_mut().unwrap().failed = vec![
                v1::CategoryCount {
                    category: "timeout".into(),
                    count: 1,
                };
                2
            ]
        });
        assert!(m.contains("twice"), "{m}");
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
