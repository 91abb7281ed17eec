//! Snapshots to and from the wire: histograms as HdrHistogram V2 + deflate bytes (never as
//! percentiles, so the coordinator's merge is exact), counters, failure patterns, checks and
//! failure attribution.

use std::collections::BTreeMap;

use gauntlet_core::attribution::{
    Attribution, MAX_LEVEL, Outcomes, Table, VALUE_BYTES, WORKER_STARTS, WORKER_SUBJECTS,
    WORKER_TARGETS,
};
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
        attribution: Some(attribution_to_proto(&s.attribution)),
    }
}

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

/// The largest histogram accepted from a peer, compressed or inflated: far above what a
/// 3-digit histogram up to [`MAX_HISTOGRAM_VALUE_US`] needs (about 200 KB).
pub const MAX_HISTOGRAM_BYTES: usize = 1 << 20;
/// The highest value a peer's histogram may track: 2^40 microseconds (12.7 days; a histogram
/// that grew to hold a day-long session tracks up to the next power of two).
pub const MAX_HISTOGRAM_VALUE_US: u64 = 1 << 40;

/// Decodes one V2 + deflate histogram from a peer without trusting its headers: the sizes it
/// claims are checked against what it carries and a fixed bound before anything is allocated
/// for them, and its precision and range must be what a worker records.
fn decode_histogram(
    deserializer: &mut Deserializer,
    bytes: &[u8],
) -> Result<hdrhistogram::Histogram<u64>, String> {
    use std::io::Read as _;
    let be32 = |b: &[u8], at: usize| -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    };
    let be64 = |b: &[u8], at: usize| -> u64 {
        u64::from_be_bytes([
            b[at],
            b[at + 1],
            b[at + 2],
            b[at + 3],
            b[at + 4],
            b[at + 5],
            b[at + 6],
            b[at + 7],
        ])
    };
    if bytes.len() < 8 || be32(bytes, 0) != 0x1c84_9314 {
        return Err("not a V2 + deflate histogram".into());
    }
    let claimed = be32(bytes, 4) as usize;
    if claimed != bytes.len() - 8 || claimed > MAX_HISTOGRAM_BYTES {
        return Err(format!(
            "claims {claimed} compressed bytes, carries {} (at most {MAX_HISTOGRAM_BYTES})",
            bytes.len() - 8
        ));
    }
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(&bytes[8..])
        .take(MAX_HISTOGRAM_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| format!("does not inflate: {e}"))?;
    if inflated.len() > MAX_HISTOGRAM_BYTES {
        return Err(format!("inflates beyond {MAX_HISTOGRAM_BYTES} bytes"));
    }
    // The V2 header: cookie, payload length, normalizing offset, significant digits, lowest
    // and highest trackable values, conversion ratio (40 bytes).
    if inflated.len() < 40 || be32(&inflated, 0) != 0x1c84_9313 {
        return Err("no V2 histogram inside".into());
    }
    let payload = be32(&inflated, 4) as usize;
    if payload != inflated.len() - 40 {
        return Err(format!(
            "claims a {payload}-byte payload, carries {}",
            inflated.len() - 40
        ));
    }
    let digits = be32(&inflated, 12);
    let (lowest, highest) = (be64(&inflated, 16), be64(&inflated, 24));
    // Workers record with 3 digits from 1 us: anything else is not theirs (and 5 digits
    // would cost 100 times the memory).
    if digits != u32::from(gauntlet_core::metrics::SIGFIG)
        || lowest != 1
        || highest > MAX_HISTOGRAM_VALUE_US
    {
        return Err(format!(
            "tracks {lowest}..{highest} with {digits} digits: not a gauntlet histogram"
        ));
    }
    // The decoder negates counts it reads; a hostile varint makes that overflow, which panics
    // where overflow checks are on: that is a refused histogram, not a crash.
    let histogram = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deserializer.deserialize(&mut inflated.as_slice())
    }))
    .map_err(|_| "its counts do not decode".to_owned())?
    .map_err(|e| format!("{e:?}"))?;
    // The buckets of a histogram tracking up to the bound reach twice as far: a count above the
    // bound is not one a worker recorded (a worker's histogram that did would track beyond it).
    if histogram.max() > MAX_HISTOGRAM_VALUE_US {
        return Err(format!(
            "records values up to {}, beyond {MAX_HISTOGRAM_VALUE_US}",
            histogram.max()
        ));
    }
    Ok(histogram)
}

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
        let histogram = decode_histogram(&mut deserializer, &h.v2_deflate).map_err(|message| {
            ConvertError::Histogram {
                name: h.name.clone(),
                message,
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

    /// A V2 + deflate buffer whose inner V2 bytes went through `edit` first.
    fn reframed(h: &hdrhistogram::Histogram<u64>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        use std::io::Write as _;
        let mut inner = Vec::new();
        V2Serializer::new().serialize(h, &mut inner).unwrap();
        edit(&mut inner);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&inner).unwrap();
        let body = z.finish().unwrap();
        let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn hostile_histogram_headers_are_refused_before_any_allocation() {
        let mut h = histogram();
        h.record(1500).unwrap();
        let mut d = Deserializer::new();
        let fine = reframed(&h, |_| {});
        assert_eq!(decode_histogram(&mut d, &fine).unwrap().len(), 1);
        // ~150 bytes claiming a 4 GiB payload.
        let mut huge = fine.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decode_histogram(&mut d, &huge)
                .unwrap_err()
                .contains("claims")
        );
        let lying = reframed(&h, |v| {
            v[4..8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes())
        });
        let e = decode_histogram(&mut d, &lying).unwrap_err();
        assert!(e.contains("-byte payload"), "{e}");
        let wide = reframed(&h, |v| v[24..32].copy_from_slice(&u64::MAX.to_be_bytes()));
        let e = decode_histogram(&mut d, &wide).unwrap_err();
        assert!(e.contains("not a gauntlet histogram"), "{e}");
        // A small buffer that inflates beyond the bound.
        let bomb = {
            use std::io::Write as _;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&vec![0u8; 4 * MAX_HISTOGRAM_BYTES]).unwrap();
            let body = z.finish().unwrap();
            let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
            out.extend((body.len() as u32).to_be_bytes());
            out.extend(body);
            out
        };
        assert!(bomb.len() < 10_000);
        let e = decode_histogram(&mut d, &bomb).unwrap_err();
        assert!(e.contains("inflates beyond"), "{e}");
        assert!(decode_histogram(&mut d, &[1, 2, 3]).is_err());
        // A count that decodes to i64::MIN (the decoder negates it): refused, no panic escapes.
        let negated = reframed(&h, |v| {
            v.truncate(40);
            v.extend([0xff; 9]);
            v[4..8].copy_from_slice(&9u32.to_be_bytes());
        });
        assert!(decode_histogram(&mut d, &negated).is_err());
        // A count in the last bucket of a histogram tracking up to the bound (2^41 - 1).
        let mut top = histogram();
        top.record(MAX_HISTOGRAM_VALUE_US - 1).unwrap();
        assert!(decode_histogram(&mut d, &reframed(&top, |_| {})).is_ok());
        let beyond = reframed(&top, |v| {
            v[24..32].copy_from_slice(&MAX_HISTOGRAM_VALUE_US.to_be_bytes());
            v.truncate(40);
            v.extend([0xfd, 0xff, 0x03, 0x02]); // 32767 zeros, then a count of 1
            v[4..8].copy_from_slice(&4u32.to_be_bytes());
        });
        let e = decode_histogram(&mut d, &beyond).unwrap_err();
        assert!(e.contains("beyond"), "{e}");
        // Another precision than the workers' 3 digits.
        let mut five = hdrhistogram::Histogram::<u64>::new(5).unwrap();
        five.record(10).unwrap();
        let e = decode_histogram(&mut d, &reframed(&five, |_| {})).unwrap_err();
        assert!(e.contains("not a gauntlet histogram"), "{e}");
    }

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
