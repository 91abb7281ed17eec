//! Latency histograms as bytes and as text: HdrHistogram V2 + deflate (how snapshots travel
//! on the wire) and the same bytes in base64 (how `report.json` carries each metric's
//! histogram). Decoding trusts nothing it reads: a peer's snapshot and a report.json a user
//! hands to `gauntlet compare` are both untrusted, so every size is checked against what the
//! input carries and a fixed bound before anything is allocated for it.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer};

use crate::metrics::SIGFIG;
use crate::sparse::{Layout, Sparse};

/// The largest histogram accepted, compressed or inflated: far above what a 3-digit histogram
/// up to [`MAX_VALUE_US`] needs (about 200 KB).
pub const MAX_BYTES: usize = 1 << 20;
/// The highest value an accepted histogram may track: 2^40 microseconds (12.7 days; a
/// histogram that grew to hold a day-long session tracks up to the next power of two).
pub const MAX_VALUE_US: u64 = 1 << 40;
/// The longest base64 text accepted: [`MAX_BYTES`] of compressed bytes, encoded.
pub const MAX_BASE64_CHARS: usize = MAX_BYTES.div_ceil(3) * 4;

/// Why a histogram's bytes (or text) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// The text is longer than any accepted histogram's encoding.
    #[error("{0} characters of base64 (at most {MAX_BASE64_CHARS})")]
    TooLong(usize),
    /// The text is not base64.
    #[error("not base64: {0}")]
    Base64(String),
    /// The bytes do not start with the V2 + deflate cookie.
    #[error("not a V2 + deflate histogram")]
    NotV2Deflate,
    /// The compressed length in the header is not what follows it, or beyond the bound.
    #[error("claims {claimed} compressed bytes, carries {carried} (at most {MAX_BYTES})")]
    Compressed {
        /// What the header says.
        claimed: usize,
        /// What follows the header.
        carried: usize,
    },
    /// The compressed bytes do not inflate.
    #[error("does not inflate: {0}")]
    Inflate(String),
    /// The compressed bytes inflate beyond the bound (a deflate bomb).
    #[error("inflates beyond {MAX_BYTES} bytes")]
    TooBig,
    /// The inflated bytes are not a V2 histogram.
    #[error("no V2 histogram inside")]
    NotV2,
    /// The payload length in the V2 header is not what follows it.
    #[error("claims a {claimed}-byte payload, carries {carried}")]
    Payload {
        /// What the header says.
        claimed: usize,
        /// What follows the header.
        carried: usize,
    },
    /// Another precision or range than gauntlet records with.
    #[error(
        "tracks {lowest}..{highest} with {digits} digits: not a gauntlet histogram \
         (3 digits from 1 us, up to {MAX_VALUE_US})"
    )]
    Foreign {
        /// Lowest trackable value.
        lowest: u64,
        /// Highest trackable value.
        highest: u64,
        /// Significant digits.
        digits: u32,
    },
    /// The counts do not decode.
    #[error("its counts do not decode: {0}")]
    Counts(String),
    /// A value was recorded beyond [`MAX_VALUE_US`].
    #[error("records values up to {0}, beyond {MAX_VALUE_US}")]
    Beyond(u64),
}

/// `h` as V2 + deflate bytes; `None` only if the serializer refuses a histogram (it does not
/// for any histogram [`crate::metrics::histogram`] makes).
///
/// The thread's one compressor is reset and reused: a new one is about 250 KB, allocated and
/// freed for every histogram, and the coordinator encodes three a second for its series, whose
/// small lasting allocations then settled in the holes those left (its memory grew by several
/// KiB a second).
pub fn encode(h: &Histogram<u64>) -> Option<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    thread_local! {
        static DEFLATER: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::default(), true));
    }
    let mut v2 = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut v2)
        .ok()?;
    let body = DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset();
        let mut body = Vec::with_capacity(v2.len() / 2 + 64);
        loop {
            let (read, written) = (d.total_in(), body.len());
            let rest = v2.get(usize::try_from(read).ok()?..)?;
            let status = d
                .compress_vec(rest, &mut body, FlushCompress::Finish)
                .ok()?;
            if status == Status::StreamEnd {
                return Some(body);
            }
            if body.len() == body.capacity() {
                body.reserve(body.capacity().max(64));
            } else if d.total_in() == read && body.len() == written {
                return None;
            }
        }
    })?;
    framed(&body)
}

/// `h` as V2 + deflate bytes whose deflate stream stores the V2 bytes as they are: how
/// snapshots travel. A V2 histogram's counts are varints already (deflate saves about a third
/// of a snapshot's few hundred bytes a histogram), and building the Huffman tables to inflate
/// twenty compressed streams a snapshot was a third of the coordinator's work with a thousand
/// workers; a stored stream inflates as a copy. Any V2 + deflate decoder reads it.
pub fn encode_stored(h: &Histogram<u64>) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut v2 = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut v2)
        .ok()?;
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(v2.len() + 16),
        flate2::Compression::none(),
    );
    z.write_all(&v2).ok()?;
    let body = z.finish().ok()?;
    framed(&body)
}

/// A zlib stream as V2 + deflate bytes: the cookie and its length before it.
fn framed(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend(0x1c84_9314u32.to_be_bytes());
    out.extend(u32::try_from(body.len()).ok()?.to_be_bytes());
    out.extend(body);
    Some(out)
}

/// `h` as base64 (standard alphabet, padded) of its V2 + deflate bytes.
pub fn to_base64(h: &Histogram<u64>) -> Option<String> {
    encode(h).map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

/// Decodes [`to_base64`]'s text, within the bounds of [`decode`].
pub fn from_base64(text: &str) -> Result<Histogram<u64>, HistogramError> {
    if text.len() > MAX_BASE64_CHARS {
        return Err(HistogramError::TooLong(text.len()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| HistogramError::Base64(e.to_string()))?;
    decode(&mut Deserializer::new(), &bytes)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Decodes one V2 + deflate histogram without trusting its headers: the sizes it claims are
/// checked against what it carries and [`MAX_BYTES`] before anything is allocated for them,
/// and its precision and range must be what gauntlet records with (3 digits from 1 us, up to
/// [`MAX_VALUE_US`]).
pub fn decode(
    deserializer: &mut Deserializer,
    bytes: &[u8],
) -> Result<Histogram<u64>, HistogramError> {
    decode_digits(deserializer, bytes, SIGFIG)
}

/// [`decode`] of a histogram of `digits` significant digits (the coordinator keeps a long
/// run's older series points at 2).
pub fn decode_digits(
    deserializer: &mut Deserializer,
    bytes: &[u8],
    digits_wanted: u8,
) -> Result<Histogram<u64>, HistogramError> {
    let inflated = inflate(bytes, digits_wanted)?;
    // The decoder negates counts it reads; a hostile varint makes that overflow, which panics
    // where overflow checks are on: that is a refused histogram, not a crash.
    let histogram = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deserializer.deserialize(&mut inflated.as_slice())
    }))
    .map_err(|_| HistogramError::Counts("a count overflows".into()))?
    .map_err(|e| HistogramError::Counts(format!("{e:?}")))?;
    // The buckets of a histogram tracking up to the bound reach twice as far: a count above the
    // bound is not one gauntlet recorded (a histogram that did would track beyond it).
    if histogram.max() > MAX_VALUE_US {
        return Err(HistogramError::Beyond(histogram.max()));
    }
    // Grows like the histograms gauntlet records into, so it can be merged into as it is.
    let mut histogram = histogram;
    histogram.auto(true);
    Ok(histogram)
}

/// [`decode`] into the histogram's non-zero counts ([`Sparse`]): the same checks, the same
/// counts at the same values, without the dense histogram (the coordinator's hot path).
pub fn decode_sparse(bytes: &[u8]) -> Result<Sparse, HistogramError> {
    let inflated = inflate(bytes, SIGFIG)?;
    // The counters the histogram's header declares (as many as hdrhistogram's decoder makes):
    // no count lies beyond them (`inflate` checked the header is within gauntlet's bound).
    let layout = Layout::of(SIGFIG);
    let counters = layout.counters_for(be64(&inflated, 24));
    let mut counts = Vec::new();
    let (mut index, mut len, mut at) = (0u64, 0u64, 40usize);
    let overflow = || HistogramError::Counts("a count overflows".into());
    while at < inflated.len() {
        let (raw, used) = varint(&inflated[at..])
            .ok_or_else(|| HistogramError::Counts("a count is cut short".into()))?;
        at += used;
        // ZigZag: a negative number is a run of empty counters.
        let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if n < 0 {
            let run = n.checked_neg().ok_or_else(overflow)? as u64;
            index = index.checked_add(run).ok_or_else(overflow)?;
            continue;
        }
        if n > 0 {
            let beyond = || {
                HistogramError::Counts(format!(
                    "a count at index {index}, beyond the {counters} counters its header declares"
                ))
            };
            if index >= counters {
                return Err(beyond());
            }
            let (low, width) = layout.value_for(index).ok_or_else(beyond)?;
            let highest = low + (1u64 << width) - 1;
            if highest > MAX_VALUE_US {
                return Err(HistogramError::Beyond(highest));
            }
            len = len.checked_add(n as u64).ok_or_else(overflow)?;
            counts.push((low, width, n as u64));
        }
        index = index.checked_add(1).ok_or_else(overflow)?;
    }
    Ok(Sparse::from_counts(counts, len))
}

/// One LEB128 varint as HdrHistogram writes them (at most 9 bytes, the 9th taken whole), and
/// the bytes it used; `None` when the input ends inside it.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..8 {
        let byte = *b.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    Some((value | (u64::from(*b.get(8)?) << 56), 9))
}

/// `input` (a zlib stream) inflated, at most [`MAX_BYTES`] of it. The decompressor is kept
/// for the thread's next histogram: making one afresh (tens of KB set up) costs more than
/// inflating a snapshot's histogram of a few hundred bytes.
fn inflate_zlib(input: &[u8]) -> Result<Vec<u8>, HistogramError> {
    use flate2::{Decompress, FlushDecompress, Status};
    thread_local! {
        static INFLATER: std::cell::RefCell<Decompress> =
            std::cell::RefCell::new(Decompress::new(true));
    }
    INFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(256, MAX_BYTES + 1));
        loop {
            let (read, written) = (d.total_in(), out.len());
            let rest = input.get(read as usize..).unwrap_or_default();
            let status = d
                .decompress_vec(rest, &mut out, FlushDecompress::None)
                .map_err(|e| HistogramError::Inflate(e.to_string()))?;
            if out.len() > MAX_BYTES {
                return Err(HistogramError::TooBig);
            }
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                // Room for more, up to one byte past the bound (which is then refused).
                out.reserve_exact(out.capacity().min(MAX_BYTES + 1 - out.len()));
            } else if d.total_in() == read && out.len() == written {
                return Err(HistogramError::Inflate("the stream ends early".into()));
            }
        }
    })
}

/// The inflated V2 bytes of a V2 + deflate histogram of `digits_wanted` digits, every size and
/// the header checked (the counts start at byte 40).
fn inflate(bytes: &[u8], digits_wanted: u8) -> Result<Vec<u8>, HistogramError> {
    if bytes.len() < 8 || be32(bytes, 0) != 0x1c84_9314 {
        return Err(HistogramError::NotV2Deflate);
    }
    let claimed = be32(bytes, 4) as usize;
    if claimed != bytes.len() - 8 || claimed > MAX_BYTES {
        return Err(HistogramError::Compressed {
            claimed,
            carried: bytes.len() - 8,
        });
    }
    let inflated = inflate_zlib(&bytes[8..])?;
    // The V2 header: cookie, payload length, normalizing offset, significant digits, lowest
    // and highest trackable values, conversion ratio (40 bytes).
    if inflated.len() < 40 || be32(&inflated, 0) != 0x1c84_9313 {
        return Err(HistogramError::NotV2);
    }
    let payload = be32(&inflated, 4) as usize;
    if payload != inflated.len() - 40 {
        return Err(HistogramError::Payload {
            claimed: payload,
            carried: inflated.len() - 40,
        });
    }
    let digits = be32(&inflated, 12);
    let (lowest, highest) = (be64(&inflated, 16), be64(&inflated, 24));
    // Gauntlet records with 3 digits from 1 us: anything else is not its own (and 5 digits
    // would cost 100 times the memory).
    // Nor does it convert its values to doubles (the V2 header's ratio is 1.0).
    let ratio = f64::from_bits(be64(&inflated, 32));
    if digits != u32::from(digits_wanted)
        || lowest != 1
        || !(2..=MAX_VALUE_US).contains(&highest)
        || ratio != 1.0
    {
        return Err(HistogramError::Foreign {
            lowest,
            highest,
            digits,
        });
    }
    // No normalizing offset: gauntlet's histograms are never shifted.
    if be32(&inflated, 8) != 0 {
        return Err(HistogramError::Foreign {
            lowest,
            highest,
            digits,
        });
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::histogram;

    /// A V2 + deflate buffer whose inner V2 bytes went through `edit` first.
    fn reframed(h: &Histogram<u64>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        use hdrhistogram::serialization::V2Serializer;
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
        assert_eq!(decode(&mut d, &fine).unwrap().len(), 1);
        // ~150 bytes claiming a 4 GiB payload.
        let mut huge = fine.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = decode(&mut d, &huge).unwrap_err().to_string();
        assert!(e.contains("claims"), "{e}");
        let lying = reframed(&h, |v| {
            v[4..8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes())
        });
        let e = decode(&mut d, &lying).unwrap_err().to_string();
        assert!(e.contains("-byte payload"), "{e}");
        let wide = reframed(&h, |v| v[24..32].copy_from_slice(&u64::MAX.to_be_bytes()));
        let e = decode(&mut d, &wide).unwrap_err().to_string();
        assert!(e.contains("not a gauntlet histogram"), "{e}");
        // A small buffer that inflates beyond the bound.
        let bomb = {
            use std::io::Write as _;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&vec![0u8; 4 * MAX_BYTES]).unwrap();
            let body = z.finish().unwrap();
            let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
            out.extend((body.len() as u32).to_be_bytes());
            out.extend(body);
            out
        };
        assert!(bomb.len() < 10_000);
        assert_eq!(decode(&mut d, &bomb).unwrap_err(), HistogramError::TooBig);
        assert_eq!(
            decode(&mut d, &[1, 2, 3]).unwrap_err(),
            HistogramError::NotV2Deflate
        );
        // A count that decodes to i64::MIN (the decoder negates it): refused, no panic escapes.
        let negated = reframed(&h, |v| {
            v.truncate(40);
            v.extend([0xff; 9]);
            v[4..8].copy_from_slice(&9u32.to_be_bytes());
        });
        assert!(matches!(
            decode(&mut d, &negated),
            Err(HistogramError::Counts(_))
        ));
        // A count in the last bucket of a histogram tracking up to the bound (2^41 - 1).
        let mut top = histogram();
        top.record(MAX_VALUE_US - 1).unwrap();
        assert!(decode(&mut d, &reframed(&top, |_| {})).is_ok());
        let beyond = reframed(&top, |v| {
            v[24..32].copy_from_slice(&MAX_VALUE_US.to_be_bytes());
            v.truncate(40);
            v.extend([0xfd, 0xff, 0x03, 0x02]); // 32767 zeros, then a count of 1
            v[4..8].copy_from_slice(&4u32.to_be_bytes());
        });
        let e = decode(&mut d, &beyond).unwrap_err();
        assert!(matches!(e, HistogramError::Beyond(_)), "{e}");
        // Another precision than gauntlet's 3 digits.
        let mut five = Histogram::<u64>::new(5).unwrap();
        five.record(10).unwrap();
        let e = decode(&mut d, &reframed(&five, |_| {})).unwrap_err();
        assert!(
            matches!(e, HistogramError::Foreign { digits: 5, .. }),
            "{e}"
        );
    }

    #[test]
    fn stored_bytes_decode_to_the_same_histogram() {
        let mut h = histogram();
        for v in [1u64, 2, 999, 45_000, 3_600_000_000] {
            h.record_n(v, v % 5 + 1).unwrap();
        }
        let stored = encode_stored(&h).unwrap();
        let mut d = Deserializer::new();
        let back = decode(&mut d, &stored).unwrap();
        assert_eq!(Sparse::of(&back), Sparse::of(&h));
        assert_eq!(decode_sparse(&stored).unwrap(), Sparse::of(&h));
        // hdrhistogram's own decoder reads it too.
        let theirs: Histogram<u64> = d.deserialize(&mut stored.as_slice()).unwrap();
        assert_eq!(Sparse::of(&theirs), Sparse::of(&h));
    }

    #[test]
    fn sparse_decoding_reads_what_dense_decoding_reads_and_refuses_what_it_refuses() {
        let mut d = Deserializer::new();
        let mut h = histogram();
        for v in [
            1u64,
            2,
            999,
            1_000,
            2_047,
            2_048,
            45_000,
            3_600_000_000,
            MAX_VALUE_US - 1,
        ] {
            h.record_n(v, v % 5 + 1).unwrap();
        }
        for bytes in [encode(&h).unwrap(), encode(&histogram()).unwrap()] {
            let dense = decode(&mut d, &bytes).unwrap();
            assert_eq!(decode_sparse(&bytes).unwrap(), Sparse::of(&dense));
        }
        let mut one = histogram();
        one.record(1500).unwrap();
        let hostile = [
            reframed(&one, |v| {
                v[4..8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes())
            }),
            reframed(&one, |v| v[24..32].copy_from_slice(&u64::MAX.to_be_bytes())),
            reframed(&one, |v| v[8..12].copy_from_slice(&1u32.to_be_bytes())),
            reframed(&one, |v| {
                v.truncate(40);
                v.extend([0xff; 9]);
                v[4..8].copy_from_slice(&9u32.to_be_bytes());
            }),
            // A varint cut short.
            reframed(&one, |v| {
                v.truncate(40);
                v.push(0x80);
                v[4..8].copy_from_slice(&1u32.to_be_bytes());
            }),
            // A count past 2^41.
            reframed(&one, |v| {
                v.truncate(40);
                v.extend([0xfd, 0xff, 0x03, 0x02]);
                v[4..8].copy_from_slice(&4u32.to_be_bytes());
            }),
            // Zeros beyond any value, then a count.
            reframed(&one, |v| {
                v.truncate(40);
                v.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x02]);
                v[4..8].copy_from_slice(&9u32.to_be_bytes());
            }),
            // A run of 2^42 - 5,120 zeros (a bucket index near u32::MAX), then a count.
            reframed(&one, |v| {
                v.truncate(40);
                v.extend([0xff, 0xaf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02]);
                v[4..8].copy_from_slice(&8u32.to_be_bytes());
            }),
            // A count past the histogram's own highest trackable value.
            reframed(&one, |v| {
                v.truncate(40);
                v.extend([0xff, 0xff, 0x03, 0x02]);
                v[4..8].copy_from_slice(&4u32.to_be_bytes());
            }),
            // Another conversion ratio; a highest trackable value below 2.
            reframed(&one, |v| {
                v[32..40].copy_from_slice(&2.0f64.to_bits().to_be_bytes())
            }),
            reframed(&one, |v| v[24..32].copy_from_slice(&1u64.to_be_bytes())),
            vec![1, 2, 3],
            encode(&Histogram::<u64>::new_with_bounds(1, 1000, 5).unwrap()).unwrap(),
        ];
        for (i, bytes) in hostile.iter().enumerate() {
            assert!(decode_sparse(bytes).is_err(), "case {i}");
            assert!(decode(&mut d, bytes).is_err(), "case {i}");
        }
        // Cut short: the stream ends before its end.
        let whole = encode(&h).unwrap();
        let mut cut = whole[..whole.len() - 6].to_vec();
        let claimed = (cut.len() - 8) as u32;
        cut[4..8].copy_from_slice(&claimed.to_be_bytes());
        assert!(matches!(
            decode_sparse(&cut),
            Err(HistogramError::Inflate(_))
        ));
    }

    #[test]
    fn base64_text_round_trips_exactly_and_bad_text_is_an_error() {
        let mut h = histogram();
        for v in [1u64, 7, 950, 12_345, 3_600_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let text = to_base64(&h).unwrap();
        let back = from_base64(&text).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            from_base64("not base64 at all!").unwrap_err().to_string(),
            "not base64: Invalid symbol 32, offset 3."
        );
        // Valid base64 of bytes that are no histogram.
        assert_eq!(
            from_base64("aGVsbG8gd29ybGQ=").unwrap_err(),
            HistogramError::NotV2Deflate
        );
        // Text longer than any histogram is refused before it is decoded.
        let long = "A".repeat(MAX_BASE64_CHARS + 4);
        assert_eq!(
            from_base64(&long).unwrap_err(),
            HistogramError::TooLong(MAX_BASE64_CHARS + 4)
        );
        // A histogram cut short.
        let cut = &text[..text.len() / 2 / 4 * 4];
        assert!(from_base64(cut).is_err());
    }
}
