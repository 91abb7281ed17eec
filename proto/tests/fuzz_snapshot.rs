//! Fuzzes `snapshot_from_proto` (what the coordinator runs on every worker snapshot) with
//! arbitrary protobuf bytes and with real snapshots whose histogram bytes are corrupted or
//! hostile; asserts it never panics, answers within a time bound, accepts only histograms whose
//! recorded values lie within `MAX_HISTOGRAM_VALUE_US`, and that an unmutated snapshot
//! round-trips exactly.
//!
//! Seeds: `fuzz/corpus/snapshot/*.pb` (encoded `v1::Snapshot`s); `accept-*` must decode,
//! `reject-*` must be refused, others may go either way.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use gauntlet_core::metrics::{
    CheckStats, Counters, FailureKey, FailureStats, SAMPLE_BYTES, SAMPLES_PER_PATTERN, Snapshot,
    histogram,
};
use gauntlet_proto::{
    ConvertError, MAX_HISTOGRAM_BYTES, MAX_HISTOGRAM_VALUE_US, MAX_SNAPSHOT_ENTRIES,
    snapshot_from_proto, snapshot_to_proto, v1,
};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer, V2Serializer};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message as _;
use support::Outcome;

/// Generous: a hostile histogram costs at most one 1 MiB inflate and decode, well under this
/// even in a debug build on a loaded machine.
const DECODE_BOUND: Duration = Duration::from_secs(2);

const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;

/// Decodes `wire` and checks everything that must hold of the answer, whatever the input.
#[allow(clippy::disallowed_types)] // a wall-clock bound on one call; no tokio in this crate
fn decode_checked(wire: &v1::Snapshot) -> Result<Result<Snapshot, ConvertError>, TestCaseError> {
    let started = std::time::Instant::now();
    let result = snapshot_from_proto(wire);
    let took = started.elapsed();
    prop_assert!(took < DECODE_BOUND, "decoding took {took:?}");
    match &result {
        Ok(s) => {
            prop_assert!(s.histograms.len() <= wire.histograms.len());
            for (name, h) in &s.histograms {
                prop_assert!(wire.histograms.iter().any(|w| &w.name == name));
                prop_assert_eq!((h.low(), h.sigfig()), (1, gauntlet_core::metrics::SIGFIG));
                // Every recorded value (the lowest of its bucket) within the documented range.
                prop_assert!(
                    h.is_empty() || h.lowest_equivalent(h.max()) <= MAX_HISTOGRAM_VALUE_US,
                    "histogram `{name}` accepted with values up to {} (> {MAX_HISTOGRAM_VALUE_US})",
                    h.max()
                );
            }
            prop_assert!(s.failures.len() <= wire.failures.len());
            for stats in s.failures.values() {
                prop_assert!(stats.samples.len() <= SAMPLES_PER_PATTERN);
                for sample in &stats.samples {
                    prop_assert!(sample.len() <= SAMPLE_BYTES + '…'.len_utf8());
                }
            }
            prop_assert!(s.checks.len() <= wire.checks.len());
            let a = &s.attribution;
            prop_assert!(a.subject.values.len() <= gauntlet_core::attribution::WORKER_SUBJECTS);
            prop_assert!(a.target.values.len() <= gauntlet_core::attribution::WORKER_TARGETS);
            for v in a.subject.values.keys().chain(a.target.values.keys()) {
                prop_assert!(v.len() <= gauntlet_core::attribution::VALUE_BYTES + '…'.len_utf8());
            }
            for l in a.live.values.keys().chain(a.in_flight.values.keys()) {
                prop_assert!(*l <= gauntlet_core::attribution::MAX_LEVEL);
            }
            prop_assert!(a.worker.is_empty(), "peers fill no coordinator dimension");
        }
        Err(ConvertError::Attribution(message)) => {
            prop_assert!(!message.is_empty());
        }
        Err(ConvertError::Histogram { name, message }) => {
            prop_assert!(!message.is_empty());
            prop_assert!(
                wire.histograms.iter().any(|w| &w.name == name)
                    || ["histograms", "failure patterns", "checks"].contains(&name.as_str()),
                "the error names no histogram of the snapshot: {name}"
            );
        }
    }
    Ok(result)
}

// ---- real snapshots -------------------------------------------------------------------------

/// A latency a worker records: below `MAX_HISTOGRAM_VALUE_US` (a histogram that grew to hold
/// 2^40 itself tracks up to 2^41 - 1, which a peer may not send).
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..2_000u64,
        (0u32..=40).prop_flat_map(|bits| 0..(1u64 << bits)),
        Just(MAX_HISTOGRAM_VALUE_US - 1),
    ]
}

fn worker_histogram() -> impl Strategy<Value = Histogram<u64>> {
    prop::collection::vec((value(), 1..1_000u64), 0..12).prop_map(|values| {
        let mut h = histogram();
        for (v, n) in values {
            h.record_n(v, n).unwrap();
        }
        h
    })
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::string::string_regex(&format!("[a-z0-9_./ -]{{0,{max}}}")).unwrap(),
        prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter),
    ]
}

fn real_snapshot() -> impl Strategy<Value = Snapshot> {
    let histograms = prop::collection::btree_map(text(16), worker_histogram(), 0..4);
    let counters = prop::array::uniform11(any::<u64>()).prop_map(|c| Counters {
        sessions_started: c[0],
        sessions_passed: c[1],
        sessions_failed: c[2],
        sessions_interrupted: c[3],
        dropped_arrivals: c[4],
        frames_sent: c[5],
        frames_received: c[6],
        bytes_sent: c[7],
        bytes_received: c[8],
        checks_run: c[9],
        checks_failed: c[10],
    });
    let key =
        (text(8), text(8), text(8), text(8)).prop_map(|(category, detail, scenario, step)| {
            FailureKey {
                category: category.as_str().into(),
                detail,
                scenario,
                step,
            }
        });
    let stats = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(text(40), 0..=SAMPLES_PER_PATTERN),
    )
        .prop_map(|(count, first_ms, last_ms, samples)| FailureStats {
            count,
            first_ms,
            last_ms,
            samples,
        });
    let failures = prop::collection::btree_map(key, stats, 0..4);
    let checks = prop::collection::btree_map(
        text(12),
        (any::<u64>(), any::<u64>()).prop_map(|(run, failed)| CheckStats { run, failed }),
        0..4,
    );
    (histograms, counters, failures, checks).prop_map(|(histograms, counters, failures, checks)| {
        Snapshot {
            histograms,
            counters,
            failures,
            checks,
            ..Snapshot::default()
        }
    })
}

fn assert_same(a: &Snapshot, b: &Snapshot) -> Outcome {
    prop_assert_eq!(a.histograms.len(), b.histograms.len());
    for ((name_a, ha), (name_b, hb)) in a.histograms.iter().zip(&b.histograms) {
        prop_assert_eq!(name_a, name_b);
        prop_assert_eq!(ha.len(), hb.len());
        prop_assert_eq!((ha.min(), ha.max()), (hb.min(), hb.max()));
        let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        prop_assert_eq!(buckets(ha), buckets(hb));
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            prop_assert_eq!(ha.value_at_quantile(q), hb.value_at_quantile(q));
        }
    }
    prop_assert_eq!(a.counters, b.counters);
    prop_assert_eq!(&a.failures, &b.failures);
    prop_assert_eq!(&a.checks, &b.checks);
    Ok(())
}

#[test]
fn an_unmutated_snapshot_round_trips_exactly() {
    let mut runner = support::runner(128);
    let strategy = (real_snapshot(), any::<u64>(), any::<u64>(), any::<u64>());
    support::run(&mut runner, &strategy, |(s, seq, at_ms, vus)| {
        let wire = snapshot_to_proto(&s, "run-fuzz", seq, at_ms, vus);
        prop_assert_eq!(wire.histograms.len(), s.histograms.len());
        // Through the bytes a worker actually sends.
        let wire = v1::Snapshot::decode(wire.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!((wire.seq, wire.at_ms, wire.active_vus), (seq, at_ms, vus));
        let back = decode_checked(&wire)?;
        prop_assert!(
            back.is_ok(),
            "a worker's own snapshot was refused: {back:?}"
        );
        assert_same(&s, &back.unwrap())
    });
}

// ---- hostile histogram bytes ----------------------------------------------------------------

/// Values a header field is rewritten to.
fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            2,
            3,
            5,
            6,
            0x7f,
            0xff,
            0x7fff_ffff,
            u64::from(u32::MAX),
            MAX_HISTOGRAM_BYTES as u64,
            MAX_HISTOGRAM_BYTES as u64 + 1,
            MAX_HISTOGRAM_VALUE_US - 1,
            MAX_HISTOGRAM_VALUE_US,
            MAX_HISTOGRAM_VALUE_US + 1,
            1 << 62,
            u64::MAX,
            1.0f64.to_bits(),
            f64::NAN.to_bits(),
        ]),
        any::<u64>(),
    ]
}

/// A count (>= 0) or a run of zeros (< 0), as the V2 payload encodes them.
fn count_or_zeros() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0..1_000i64,
        2 => -40_000..0i64,
        // Runs that reach the last buckets of a histogram tracking up to 2^40.
        1 => -33_000..-30_000i64,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

/// One way to spoil a histogram's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR bytes of the outer (compressed) buffer.
    Flip(Vec<(Index, u8)>),
    /// Cut the outer buffer.
    Truncate(Index),
    /// Rewrite the outer length field.
    OuterLength(u32),
    /// Rewrite a V2 header field (payload length, normalizing offset, digits, lowest, highest,
    /// ratio) inside, then recompress with a consistent outer length.
    Header { field: usize, value: u64 },
    /// XOR bytes of the inflated V2 buffer, then recompress.
    InnerFlip(Vec<(Index, u8)>),
    /// Cut the inflated buffer, then recompress.
    InnerTruncate(Index),
    /// Replace the counts with these (payload length kept consistent), and the highest
    /// trackable value if given.
    Payload {
        highest: Option<u64>,
        counts: Vec<i64>,
    },
    /// Counts placed at chosen buckets (some past the last one) of a histogram tracking up to
    /// `highest` (the header's if not given).
    Cells {
        highest: Option<u64>,
        cells: Vec<(Index, u64)>,
    },
    /// A small buffer that inflates to `zeros` zero bytes, after a V2 header or not.
    Bomb { zeros: usize, header: bool },
    /// Another histogram's bytes: other precision, lowest or highest.
    Foreign {
        digits: u8,
        lowest: u64,
        highest: u64,
        values: Vec<u64>,
    },
    /// Random bytes, behind a right cookie and length or not.
    Garbage { framed: bool, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let flips = || prop::collection::vec((any::<Index>(), 1..=255u8), 1..8);
    prop_oneof![
        flips().prop_map(Mutation::Flip),
        any::<Index>().prop_map(Mutation::Truncate),
        interesting().prop_map(|v| Mutation::OuterLength(v as u32)),
        (0..6usize, interesting()).prop_map(|(field, value)| Mutation::Header { field, value }),
        flips().prop_map(Mutation::InnerFlip),
        any::<Index>().prop_map(Mutation::InnerTruncate),
        (
            prop::option::of(prop_oneof![Just(MAX_HISTOGRAM_VALUE_US), interesting()]),
            prop_oneof![
                prop::collection::vec(count_or_zeros(), 0..4),
                prop::collection::vec(count_or_zeros(), 0..48)
            ]
        )
            .prop_map(|(highest, counts)| Mutation::Payload { highest, counts }),
        (
            prop::option::of(prop_oneof![Just(MAX_HISTOGRAM_VALUE_US), interesting()]),
            prop::collection::vec(
                (
                    any::<Index>(),
                    prop_oneof![1..1_000u64, Just(u64::MAX >> 1)]
                ),
                1..6
            )
        )
            .prop_map(|(highest, cells)| Mutation::Cells { highest, cells }),
        (
            prop::sample::select(vec![
                MAX_HISTOGRAM_BYTES - 40,
                MAX_HISTOGRAM_BYTES + 1,
                4 * MAX_HISTOGRAM_BYTES
            ]),
            any::<bool>()
        )
            .prop_map(|(zeros, header)| Mutation::Bomb { zeros, header }),
        (
            0u8..=6,
            prop_oneof![Just(1u64), 1..2_000u64],
            prop_oneof![interesting(), 2..(1u64 << 42)],
            prop::collection::vec(value(), 0..8)
        )
            .prop_map(|(digits, lowest, highest, values)| Mutation::Foreign {
                digits,
                lowest,
                highest,
                values
            }),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(framed, bytes)| Mutation::Garbage { framed, bytes }),
    ]
}

fn deflate(inner: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(inner).unwrap();
    z.finish().unwrap()
}

/// The V2 bytes inside a V2 + deflate buffer, `None` when an earlier mutation spoiled them.
fn inflate(outer: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut inner = Vec::new();
    flate2::read::ZlibDecoder::new(outer.get(8..)?)
        .read_to_end(&mut inner)
        .ok()?;
    Some(inner)
}

/// `body` behind the V2 + deflate cookie and its length.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// A V2 header claiming `payload` bytes for a 3-digit histogram from 1 to `highest`.
fn v2_header(payload: usize, highest: u64) -> Vec<u8> {
    let mut h = V2_COOKIE.to_be_bytes().to_vec();
    h.extend((payload as u32).to_be_bytes());
    h.extend(0u32.to_be_bytes());
    h.extend(3u32.to_be_bytes());
    h.extend(1u64.to_be_bytes());
    h.extend(highest.to_be_bytes());
    h.extend(1.0f64.to_be_bytes());
    h
}

/// Zig-zag LEB128, at most 9 bytes, as the V2 payload encodes counts.
fn varint(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return out;
        }
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn bomb(zeros: usize, header: bool) -> Vec<u8> {
    static BOMBS: std::sync::Mutex<BTreeMap<(usize, bool), Vec<u8>>> =
        std::sync::Mutex::new(BTreeMap::new());
    BOMBS
        .lock()
        .unwrap()
        .entry((zeros, header))
        .or_insert_with(|| {
            let mut inner = if header {
                v2_header(zeros, MAX_HISTOGRAM_VALUE_US)
            } else {
                Vec::new()
            };
            inner.resize(inner.len() + zeros, 0);
            frame(&deflate(&inner))
        })
        .clone()
}

/// A position in a buffer of `len` bytes, if it has any.
fn at_index(at: &Index, len: usize) -> Option<usize> {
    (len > 0).then(|| at.index(len))
}

fn apply(m: &Mutation, outer: &mut Vec<u8>) {
    let recompress = |outer: &mut Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        if let Some(mut inner) = inflate(outer) {
            edit(&mut inner);
            *outer = frame(&deflate(&inner));
        }
    };
    match m {
        Mutation::Flip(flips) => {
            for (at, mask) in flips {
                if let Some(i) = at_index(at, outer.len()) {
                    outer[i] ^= mask;
                }
            }
        }
        Mutation::Truncate(at) => outer.truncate(at_index(at, outer.len()).unwrap_or(0)),
        Mutation::OuterLength(n) => {
            outer.resize(outer.len().max(8), 0);
            outer[4..8].copy_from_slice(&n.to_be_bytes());
        }
        Mutation::Header { field, value } => recompress(outer, &|inner| {
            inner.resize(inner.len().max(40), 0);
            let (at, wide) = [
                (4, false),
                (8, false),
                (12, false),
                (16, true),
                (24, true),
                (32, true),
            ][*field];
            if wide {
                inner[at..at + 8].copy_from_slice(&value.to_be_bytes());
            } else {
                inner[at..at + 4].copy_from_slice(&(*value as u32).to_be_bytes());
            }
        }),
        Mutation::InnerFlip(flips) => recompress(outer, &|inner| {
            for (at, mask) in flips {
                if let Some(i) = at_index(at, inner.len()) {
                    inner[i] ^= mask;
                }
            }
        }),
        Mutation::InnerTruncate(at) => recompress(outer, &|inner| {
            inner.truncate(at_index(at, inner.len()).unwrap_or(0))
        }),
        Mutation::Payload { highest, counts } => recompress(outer, &|inner| {
            inner.resize(40, 0);
            if let Some(highest) = highest {
                inner[24..32].copy_from_slice(&highest.to_be_bytes());
            }
            for n in counts {
                inner.extend(varint(*n));
            }
            let payload = (inner.len() - 40) as u32;
            inner[4..8].copy_from_slice(&payload.to_be_bytes());
        }),
        Mutation::Cells { highest, cells } => recompress(outer, &|inner| {
            inner.resize(40, 0);
            if let Some(highest) = highest {
                inner[24..32].copy_from_slice(&highest.to_be_bytes());
            }
            let highest = u64::from_be_bytes(inner[24..32].try_into().unwrap());
            let len = Histogram::<u64>::new_with_bounds(1, highest.min(1 << 62), 3)
                .map_or(1 << 15, |h| h.distinct_values());
            let mut at: Vec<(usize, u64)> = cells
                .iter()
                .map(|(i, n)| (i.index(len + len / 16 + 1), *n))
                .collect();
            at.sort();
            at.dedup_by_key(|c| c.0);
            let mut next = 0;
            for (i, n) in at {
                if i > next {
                    inner.extend(varint(-((i - next) as i64)));
                }
                inner.extend(varint(n as i64));
                next = i + 1;
            }
            let payload = (inner.len() - 40) as u32;
            inner[4..8].copy_from_slice(&payload.to_be_bytes());
        }),
        Mutation::Bomb { zeros, header } => *outer = bomb(*zeros, *header),
        Mutation::Foreign {
            digits,
            lowest,
            highest,
            values,
        } => {
            if let Ok(mut h) = Histogram::<u64>::new_with_bounds(*lowest, *highest, *digits) {
                for v in values {
                    let _ = h.record(*v);
                }
                outer.clear();
                V2DeflateSerializer::new().serialize(&h, outer).unwrap();
            }
        }
        Mutation::Garbage { framed, bytes } => {
            *outer = if *framed { frame(bytes) } else { bytes.clone() }
        }
    }
}

#[test]
fn hostile_histograms_are_refused_or_bounded() {
    let mut runner = support::runner(256);
    let strategy = (
        real_snapshot(),
        any::<Index>(),
        prop::collection::vec(mutation(), 1..3),
    );
    support::run(&mut runner, &strategy, |(s, which, mutations)| {
        let mut wire = snapshot_to_proto(&s, "run-fuzz", 1, 1000, 1);
        if wire.histograms.is_empty() {
            wire = snapshot_to_proto(
                &Snapshot {
                    histograms: [("ws.connect".to_owned(), histogram())].into(),
                    ..s.clone()
                },
                "run-fuzz",
                1,
                1000,
                1,
            );
        }
        let i = which.index(wire.histograms.len());
        for m in &mutations {
            apply(m, &mut wire.histograms[i].v2_deflate);
        }
        let result = decode_checked(&wire)?;
        // A foreign histogram alone is accepted exactly when it is what a worker records.
        if let [
            Mutation::Foreign {
                digits,
                lowest,
                highest,
                ..
            },
        ] = mutations.as_slice()
            && Histogram::<u64>::new_with_bounds(*lowest, *highest, *digits).is_ok()
        {
            let theirs = (*digits, *lowest) == (3, 1) && *highest <= MAX_HISTOGRAM_VALUE_US;
            prop_assert_eq!(result.is_ok(), theirs, "{:?}", result.err());
        }
        Ok(())
    });
}

// ---- arbitrary bytes ------------------------------------------------------------------------

fn check_bytes(bytes: &[u8]) -> Outcome {
    if let Ok(wire) = v1::Snapshot::decode(bytes) {
        let _ = decode_checked(&wire)?;
    }
    Ok(())
}

#[test]
fn arbitrary_protobuf_bytes_are_refused_or_bounded() {
    every_seed_holds();
    let seeds: Vec<Vec<u8>> = support::corpus("snapshot")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let mut runner = support::runner(256);
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // A seed with bytes flipped, cut or spliced.
        (
            prop::sample::select(seeds),
            prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
            any::<Index>(),
            prop::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(mut bytes, flips, cut, splice)| {
                for (at, mask) in flips {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] ^= mask;
                    }
                }
                let at = cut.index(bytes.len() + 1);
                bytes.splice(at..at, splice);
                bytes
            }),
    ];
    support::run(&mut runner, &strategy, |bytes| check_bytes(&bytes));
}

/// Every seed of the corpus, run before any random case.
fn every_seed_holds() {
    for (name, bytes) in support::corpus("snapshot") {
        let wire = v1::Snapshot::decode(bytes.as_slice())
            .unwrap_or_else(|e| panic!("seed {name} is not a v1::Snapshot: {e}"));
        let result = decode_checked(&wire).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        if name.starts_with("accept-") {
            assert!(result.is_ok(), "seed {name} refused: {:?}", result.err());
        }
        if name.starts_with("reject-") {
            assert!(result.is_err(), "seed {name} accepted");
        }
    }
}

/// Writes the hostile seeds of `fuzz/corpus/snapshot/` (run by hand after changing them:
/// `cargo test -p gauntlet-proto --test fuzz_snapshot -- --ignored write_seeds`).
#[test]
#[ignore]
fn write_seeds() {
    let dir = support::corpus_dir("snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    let mut real = Snapshot::default();
    let mut h = histogram();
    for v in [1u64, 7, 950, 12_345, 3_600_000_000] {
        h.record(v).unwrap();
    }
    real.histograms.insert("ws.handshake".into(), h.clone());
    real.histograms
        .insert("ws.expect.reply".into(), histogram());
    real.counters.sessions_started = 5;
    real.counters.sessions_passed = 3;
    real.failures.insert(
        FailureKey {
            category: "timeout".into(),
            detail: "reply".into(),
            scenario: "chat".into(),
            step: "reply".into(),
        },
        FailureStats::one(42, "waited 5s".into()),
    );
    real.checks
        .insert("chat/reply".into(), CheckStats { run: 5, failed: 1 });
    let encode = |s: &Snapshot, seq, at_ms| snapshot_to_proto(s, "run-seed", seq, at_ms, 2);
    let write = |name: &str, wire: &v1::Snapshot| {
        std::fs::write(dir.join(name), wire.encode_to_vec()).unwrap();
    };
    let base = encode(&real, 7, 1000);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut wire = base.clone();
        edit(&mut wire.histograms[0].v2_deflate);
        wire
    };
    write("accept-real.pb", &base);
    write("accept-huge-at-ms.pb", &encode(&real, u64::MAX, u64::MAX));
    let mut top = histogram();
    top.record(MAX_HISTOGRAM_VALUE_US - 1).unwrap();
    write(
        "accept-max-value.pb",
        &encode(
            &Snapshot {
                histograms: [("ws.handshake".to_owned(), top)].into(),
                ..Snapshot::default()
            },
            1,
            1,
        ),
    );
    write(
        "reject-outer-claims-4gib.pb",
        &with(&|b| b[4..8].copy_from_slice(&u32::MAX.to_be_bytes())),
    );
    write(
        "reject-payload-claims-2gib.pb",
        &with(&|b| {
            apply(
                &Mutation::Header {
                    field: 0,
                    value: 0x7fff_ffff,
                },
                b,
            )
        }),
    );
    // The most work an accepted histogram can ask for: a 1 MiB payload of zero counts.
    write(
        "accept-a-mebibyte-of-zero-counts.pb",
        &with(&|b| *b = bomb(MAX_HISTOGRAM_BYTES - 40, true)),
    );
    write(
        "reject-zlib-bomb.pb",
        &with(&|b| *b = bomb(4 * MAX_HISTOGRAM_BYTES, true)),
    );
    write(
        "reject-five-digits.pb",
        &with(&|b| {
            let mut five = Histogram::<u64>::new(5).unwrap();
            five.record(10).unwrap();
            b.clear();
            V2DeflateSerializer::new().serialize(&five, b).unwrap();
        }),
    );
    write(
        "reject-highest-u64-max.pb",
        &with(&|b| {
            apply(
                &Mutation::Header {
                    field: 4,
                    value: u64::MAX,
                },
                b,
            )
        }),
    );
    write(
        "reject-count-i64-min.pb",
        &with(&|b| {
            apply(
                &Mutation::Payload {
                    highest: None,
                    counts: vec![i64::MIN],
                },
                b,
            )
        }),
    );
    write(
        "reject-too-many-checks.pb",
        &v1::Snapshot {
            checks: (0..=MAX_SNAPSHOT_ENTRIES)
                .map(|i| v1::CheckResult {
                    name: i.to_string(),
                    run: 1,
                    failed: 0,
                })
                .collect(),
            ..base.clone()
        },
    );
    // A 3-digit histogram tracking up to 2^40 has buckets up to 2^41 - 1: a count in the last
    // one is beyond what a peer may send.
    write(
        "reject-count-beyond-highest.pb",
        &with(&|b| {
            let beyond = Mutation::Payload {
                highest: Some(MAX_HISTOGRAM_VALUE_US),
                counts: vec![-32_767, 1],
            };
            apply(&beyond, b)
        }),
    );
    let mut plain = Vec::new();
    V2Serializer::new().serialize(&h, &mut plain).unwrap();
    write("reject-not-deflated.pb", &with(&|b| *b = plain.clone()));
}
