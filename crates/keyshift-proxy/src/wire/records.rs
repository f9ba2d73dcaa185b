//! Record batches (magic v2) as they travel in Produce requests and Fetch responses: header
//! fields, and every record's offset, timestamp, key, value and headers, through gzip, snappy
//! (raw or xerial-framed), lz4 (frame) and zstd.
//!
//! Written here rather than taken from `kafka-protocol` so that every size that comes from the
//! wire is bounded before anything is allocated: decompression stops at a limit (a 1 KiB zstd
//! bomb must not become 4 GiB), record and header counts never reserve more than the bytes
//! that could hold them. The CRC is not verified: the broker does that, and the proxy only
//! observes. Keys, values and header values are [`Bytes`] slices of the frame (or of the
//! decompressed block), so decoding copies nothing for uncompressed batches.

use std::io::Read;

use bytes::{Buf, Bytes};
use keyshift_core::protocol::{is_fence, FENCE_HEADER};

/// Bytes before the records in a v2 batch (base offset through record count).
pub const BATCH_HEADER_BYTES: usize = 61;

/// `baseOffset` (8) + `batchLength` (4): the part of the header not counted in `batchLength`.
const LOG_OVERHEAD: usize = 12;

/// Offset of the magic byte in a batch.
const MAGIC_OFFSET: usize = 16;

/// Compression codec of a batch (attributes bits 0–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy (raw block or xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key (UTF-8 by convention, not checked).
    pub key: Bytes,
    /// Header value; `None` for a null value.
    pub value: Option<Bytes>,
}

/// One record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (base offset + delta). In a Produce request the base offset is 0, so
    /// this is the position in the batch.
    pub offset: i64,
    /// Timestamp in ms since the epoch (base timestamp + delta).
    pub timestamp: i64,
    /// Key; `None` for a null key.
    pub key: Option<Bytes>,
    /// Value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in wire order.
    pub headers: Vec<Header>,
}

impl Record {
    /// Whether this is a keyshift fence (its `keyshift-fence` header or the reserved value,
    /// [`keyshift_core::protocol::is_fence`]): protocol, not one of the application's records.
    pub fn is_fence(&self) -> bool {
        let header = self
            .headers
            .iter()
            .any(|h| h.key.as_ref() == FENCE_HEADER.as_bytes());
        is_fence(header, self.value.as_deref())
    }
}

/// A decoded v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Offset of the first record (0 in Produce requests; assigned by the broker).
    pub base_offset: i64,
    /// Size of the whole batch on the wire, header included.
    pub size: usize,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Codec of the records section.
    pub compression: Compression,
    /// Whether `base_timestamp`/`max_timestamp` are the broker's append time.
    pub log_append_time: bool,
    /// Part of a transaction.
    pub transactional: bool,
    /// A control batch (transaction markers), never delivered to applications.
    pub control: bool,
    /// Offset delta of the last record: `base_offset + last_offset_delta` is the batch's last
    /// offset even when compaction removed records.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id (−1 if none).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record (idempotent producers).
    pub base_sequence: i32,
    /// Record count from the header.
    pub record_count: i32,
    /// The records; empty when the batch was decoded with [`Detail::Header`].
    pub records: Vec<Record>,
}

impl RecordBatch {
    /// Offset one past the batch's last record.
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
            .saturating_add(1)
    }
}

/// How much of each batch to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Only the 61-byte batch header (counts, offsets, timestamps): no decompression.
    Header,
    /// Header and every record.
    Records,
}

/// Bounds on what decoding may allocate.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decompressed records section of one batch.
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a batch could not be decoded. Batches are observed, not judged: the frame carrying
/// them is relayed regardless.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The batch uses the pre-0.11 message format (magic 0 or 1).
    #[error("unsupported record batch magic {0} (only v2 is decoded)")]
    UnsupportedMagic(i8),
    /// A length or count that does not fit the bytes available.
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
    /// The attributes name a codec that does not exist.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// Decompression failed.
    #[error("{codec} decompression failed: {msg}")]
    Decompress {
        /// The codec.
        codec: &'static str,
        /// What the decompressor said.
        msg: String,
    },
    /// The decompressed size exceeds [`Limits::max_decompressed_bytes`].
    #[error("decompressed batch exceeds the {0}-byte limit")]
    TooLarge(usize),
}

impl RecordError {
    /// A short fixed label, fit for a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            RecordError::UnsupportedMagic(_) => "unsupported_magic",
            RecordError::Corrupt(_) => "corrupt",
            RecordError::UnknownCodec(_) => "unknown_codec",
            RecordError::Decompress { .. } => "decompress",
            RecordError::TooLarge(_) => "decompressed_too_large",
        }
    }
}

/// Decodes every complete batch in a records field. A trailing partial batch (Fetch responses
/// may end with one, cut at the fetch size) is skipped, as Kafka clients do.
pub fn decode_batches(
    data: &Bytes,
    detail: Detail,
    limits: &Limits,
) -> Result<Vec<RecordBatch>, RecordError> {
    let mut out = Vec::new();
    let mut rest = data.clone();
    while rest.len() >= LOG_OVERHEAD {
        let batch_len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if batch_len < 0 {
            return Err(RecordError::Corrupt("negative batch length"));
        }
        let total = LOG_OVERHEAD + batch_len as usize;
        if rest.len() < total {
            break;
        }
        let one = rest.split_to(total);
        out.push(decode_batch(one, detail, limits)?);
    }
    Ok(out)
}

/// Decodes one batch (`data` is exactly one batch, header included).
pub fn decode_batch(
    data: Bytes,
    detail: Detail,
    limits: &Limits,
) -> Result<RecordBatch, RecordError> {
    if data.len() > MAGIC_OFFSET {
        let magic = data[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(RecordError::UnsupportedMagic(magic));
        }
    }
    if data.len() < BATCH_HEADER_BYTES {
        return Err(RecordError::Corrupt("batch shorter than its header"));
    }
    let size = data.len();
    let mut b = data;
    let base_offset = b.get_i64();
    let _batch_length = b.get_i32();
    let partition_leader_epoch = b.get_i32();
    let _magic = b.get_i8();
    let _crc = b.get_u32();
    let attributes = b.get_i16();
    let last_offset_delta = b.get_i32();
    let base_timestamp = b.get_i64();
    let max_timestamp = b.get_i64();
    let producer_id = b.get_i64();
    let producer_epoch = b.get_i16();
    let base_sequence = b.get_i32();
    let record_count = b.get_i32();
    let compression = match attributes & 0x7 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(RecordError::UnknownCodec(other)),
    };
    let mut batch = RecordBatch {
        base_offset,
        size,
        partition_leader_epoch,
        compression,
        log_append_time: attributes & 0x8 != 0,
        transactional: attributes & 0x10 != 0,
        control: attributes & 0x20 != 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
        records: Vec::new(),
    };
    if record_count < 0 {
        return Err(RecordError::Corrupt("negative record count"));
    }
    if detail == Detail::Header {
        return Ok(batch);
    }
    let section = decompress(compression, b, limits.max_decompressed_bytes)?;
    batch.records = decode_records(section, &batch)?;
    Ok(batch)
}

fn decode_records(mut b: Bytes, batch: &RecordBatch) -> Result<Vec<Record>, RecordError> {
    // Every record takes at least 7 bytes (length, attributes, two deltas, key/value lengths,
    // header count), so the count cannot reserve more than the bytes could hold.
    let count = batch.record_count as usize;
    let mut records = Vec::with_capacity(count.min(b.len() / 7));
    for _ in 0..count {
        let len = varint(&mut b)?;
        if len < 0 || len as usize > b.len() {
            return Err(RecordError::Corrupt("record length exceeds the batch"));
        }
        let mut r = b.split_to(len as usize);
        let _attributes = get_u8(&mut r)?;
        let timestamp_delta = varlong(&mut r)?;
        let offset_delta = varint(&mut r)?;
        let key = nullable_bytes(&mut r)?;
        let value = nullable_bytes(&mut r)?;
        let header_count = varint(&mut r)?;
        if header_count < 0 || header_count as usize > r.len() / 2 {
            return Err(RecordError::Corrupt("header count exceeds the record"));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key = nullable_bytes(&mut r)?.ok_or(RecordError::Corrupt("null header key"))?;
            let value = nullable_bytes(&mut r)?;
            headers.push(Header { key, value });
        }
        records.push(Record {
            offset: batch.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: batch.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        });
    }
    Ok(records)
}

fn get_u8(b: &mut Bytes) -> Result<u8, RecordError> {
    if b.is_empty() {
        return Err(RecordError::Corrupt("record ends early"));
    }
    Ok(b.get_u8())
}

/// Zigzag varint (Kafka's `VarInt`, at most 5 bytes).
fn varint(b: &mut Bytes) -> Result<i32, RecordError> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let byte = get_u8(b)?;
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((v >> 1) as i32) ^ -((v & 1) as i32));
        }
    }
    Err(RecordError::Corrupt("varint longer than 5 bytes"))
}

/// Zigzag varlong (Kafka's `VarLong`, at most 10 bytes).
fn varlong(b: &mut Bytes) -> Result<i64, RecordError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = get_u8(b)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err(RecordError::Corrupt("varlong longer than 10 bytes"))
}

fn nullable_bytes(b: &mut Bytes) -> Result<Option<Bytes>, RecordError> {
    let len = varint(b)?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || len as usize > b.len() {
        return Err(RecordError::Corrupt("field length exceeds the record"));
    }
    Ok(Some(b.split_to(len as usize)))
}

/// xerial snappy-java stream header, used by the Java client.
const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn decompress(codec: Compression, data: Bytes, max: usize) -> Result<Bytes, RecordError> {
    let err = |codec: Compression| {
        move |e: std::io::Error| RecordError::Decompress {
            codec: codec.as_str(),
            msg: e.to_string(),
        }
    };
    match codec {
        Compression::None => Ok(data),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&data[..]), max)
            .map_err(err(codec))
            .and_then(|o| o.ok_or(RecordError::TooLarge(max))),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(&data[..]).map_err(err(codec))?;
            read_bounded(decoder, max)
                .map_err(err(codec))
                .and_then(|o| o.ok_or(RecordError::TooLarge(max)))
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&data[..]).map_err(err(codec))?;
            read_bounded(decoder, max)
                .map_err(err(codec))
                .and_then(|o| o.ok_or(RecordError::TooLarge(max)))
        }
        Compression::Snappy => snappy(&data, max),
    }
}

/// Reads to the end, or `None` once more than `max` bytes come out.
fn read_bounded<R: Read>(reader: R, max: usize) -> std::io::Result<Option<Bytes>> {
    let mut out = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Ok(None);
    }
    Ok(Some(Bytes::from(out)))
}

fn snappy(data: &[u8], max: usize) -> Result<Bytes, RecordError> {
    let fail = |msg: String| RecordError::Decompress {
        codec: "snappy",
        msg,
    };
    let mut out = Vec::new();
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let n = snap::raw::decompress_len(block).map_err(|e| fail(e.to_string()))?;
        if out.len().saturating_add(n) > max {
            return Err(RecordError::TooLarge(max));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    };
    if data.len() >= 16 && data.starts_with(XERIAL_MAGIC) {
        // Magic (8), version (4), compatible version (4), then [length (4), raw block]*.
        let mut rest = &data[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(fail("truncated xerial block length".to_string()));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                return Err(fail("xerial block exceeds the data".to_string()));
            }
            raw_block(&rest[..len], &mut out)?;
            rest = &rest[len..];
        }
    } else {
        raw_block(data, &mut out)?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use std::io::Write;

    fn put_varint(b: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            b.push((z as u8) | 0x80);
            z >>= 7;
        }
        b.push(z as u8);
    }

    fn put_nullable(b: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => put_varint(b, -1),
            Some(v) => {
                put_varint(b, v.len() as i64);
                b.extend_from_slice(v);
            }
        }
    }

    type TestRecord<'a> = (
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Vec<(&'a [u8], Option<&'a [u8]>)>,
    );

    /// Encodes records the way Kafka does (independently of the decoder under test).
    fn records_section(recs: &[TestRecord<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (k, v, hs)) in recs.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0u8);
            put_varint(&mut r, i as i64 * 10); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_nullable(&mut r, *k);
            put_nullable(&mut r, *v);
            put_varint(&mut r, hs.len() as i64);
            for (hk, hv) in hs {
                put_nullable(&mut r, Some(hk));
                put_nullable(&mut r, *hv);
            }
            put_varint(&mut out, r.len() as i64);
            out.extend_from_slice(&r);
        }
        out
    }

    fn batch(codec: i16, count: i32, section: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i64(100); // base offset
        b.put_i32((BATCH_HEADER_BYTES - LOG_OVERHEAD + section.len()) as i32);
        b.put_i32(7); // leader epoch
        b.put_i8(2);
        b.put_u32(0); // crc (not checked)
        b.put_i16(codec);
        b.put_i32(count - 1);
        b.put_i64(1_700_000_000_000);
        b.put_i64(1_700_000_000_000 + 10 * (count as i64 - 1));
        b.put_i64(42);
        b.put_i16(1);
        b.put_i32(0);
        b.put_i32(count);
        b.extend_from_slice(section);
        b.freeze()
    }

    #[test]
    fn fences_are_recognised_by_header_or_reserved_value() {
        use keyshift_core::protocol::FENCE_VALUE;
        let record = |value: &'static [u8], headers: &[&'static [u8]]| Record {
            offset: 0,
            timestamp: 0,
            key: Some(Bytes::from_static(b"K")),
            value: Some(Bytes::from_static(value)),
            headers: headers
                .iter()
                .map(|k| Header {
                    key: Bytes::from_static(k),
                    value: Some(Bytes::from_static(b"\x01\x01\x00")),
                })
                .collect(),
        };
        assert!(record(FENCE_VALUE, &[]).is_fence(), "headers stripped");
        assert!(record(FENCE_VALUE, &[b"keyshift-fence"]).is_fence());
        assert!(record(b"", &[b"keyshift-fence"]).is_fence(), "older fences");
        assert!(!record(b"", &[]).is_fence());
        assert!(!record(b"v", &[b"other"]).is_fence());
    }

    fn sample() -> Vec<TestRecord<'static>> {
        vec![
            (
                Some(b"k1"),
                Some(b"v1"),
                vec![(b"traceparent", Some(b"00-abc"))],
            ),
            (None, Some(b"v2"), vec![]),
            (Some(b"k3"), None, vec![(b"h", None), (b"i", Some(b""))]),
        ]
    }

    fn check(decoded: &RecordBatch) {
        assert_eq!(decoded.record_count, 3);
        assert_eq!(decoded.base_offset, 100);
        assert_eq!(decoded.next_offset(), 103);
        assert_eq!(decoded.producer_id, 42);
        let r = &decoded.records;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r[0].headers[0].key, Bytes::from_static(b"traceparent"));
        assert_eq!(r[0].headers[0].value.as_deref(), Some(&b"00-abc"[..]));
        assert_eq!(r[1].key, None);
        assert_eq!(r[1].offset, 101);
        assert_eq!(r[1].timestamp, 1_700_000_000_010);
        assert_eq!(r[2].value, None);
        assert_eq!(r[2].headers.len(), 2);
        assert_eq!(r[2].headers[0].value, None);
    }

    #[test]
    fn uncompressed() {
        let b = batch(0, 3, &records_section(&sample()));
        let all = decode_batches(&b, Detail::Records, &Limits::default()).unwrap();
        assert_eq!(all.len(), 1);
        check(&all[0]);
        assert_eq!(all[0].size, b.len());
    }

    #[test]
    fn every_codec() {
        let plain = records_section(&sample());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&1u32.to_be_bytes());
        xerial.extend_from_slice(&1u32.to_be_bytes());
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&plain).unwrap();
        let (lz, res) = lz.finish();
        res.unwrap();
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (codec, data) in [(1, gz), (2, raw_snappy), (2, xerial), (3, lz), (4, zs)] {
            let b = batch(codec, 3, &data);
            let all = decode_batches(&b, Detail::Records, &Limits::default()).unwrap();
            check(&all[0]);
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![0u8; 1 << 20];
        let zs = zstd::encode_all(&big[..], 3).unwrap();
        let b = batch(4, 1, &zs);
        let limits = Limits {
            max_decompressed_bytes: 1000,
        };
        assert_eq!(
            decode_batches(&b, Detail::Records, &limits),
            Err(RecordError::TooLarge(1000))
        );
        // The header alone still decodes without decompressing.
        let h = decode_batches(&b, Detail::Header, &limits).unwrap();
        assert_eq!(h[0].record_count, 1);
        assert!(h[0].records.is_empty());
    }

    #[test]
    fn trailing_partial_batch_is_skipped() {
        let one = batch(0, 3, &records_section(&sample()));
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..30]);
        let all = decode_batches(&Bytes::from(two), Detail::Records, &Limits::default()).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn hostile_counts_are_errors_not_allocations() {
        let b = batch(0, i32::MAX, &records_section(&sample()));
        assert!(decode_batches(&b, Detail::Records, &Limits::default()).is_err());
        let mut legacy = batch(0, 1, &[]).to_vec();
        legacy[MAGIC_OFFSET] = 1;
        assert_eq!(
            decode_batches(&Bytes::from(legacy), Detail::Records, &Limits::default()),
            Err(RecordError::UnsupportedMagic(1))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_batches(&Bytes::from(data), Detail::Records, &Limits::default());
        }

        #[test]
        fn keys_and_values_round_trip(
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..20)),
                 proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..40))),
                1..20)
        ) {
            let input: Vec<TestRecord<'_>> =
                recs.iter().map(|(k, v)| (k.as_deref(), v.as_deref(), vec![])).collect();
            let b = batch(0, input.len() as i32, &records_section(&input));
            let out = decode_batches(&b, Detail::Records, &Limits::default()).unwrap();
            proptest::prop_assert_eq!(out[0].records.len(), input.len());
            for (r, (k, v)) in out[0].records.iter().zip(&recs) {
                proptest::prop_assert_eq!(r.key.as_deref(), k.as_deref());
                proptest::prop_assert_eq!(r.value.as_deref(), v.as_deref());
            }
        }
    }
}
