//! Request and response frames through the `kafka-protocol` codecs: every API key, every
//! version the codecs know, with the header version derived from the API version (as Kafka's
//! JSON specs define it).
//!
//! A request's API key and version pick the body decoder; a response carries only its
//! correlation id, so the caller matches it to its request first ([`response_correlation_id`])
//! and then decodes it with the request's key and version ([`decode_response`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::frame::LENGTH_BYTES;
use super::FrameError;

/// The [`ApiKey`] for a wire value, `None` if Kafka defines no such API.
pub fn api_key(key: i16) -> Option<ApiKey> {
    ApiKey::try_from(key).ok()
}

/// The API's name as Kafka spells it (`Produce`, `Fetch`, ...), or `Unknown`.
pub fn api_name(key: i16) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        // Built once from the codec's own enum, so names follow the codec version; the leak is
        // one short string per API key.
        ApiKey::iter()
            .map(|k| (k as i16, &*Box::leak(format!("{k:?}").into_boxed_str())))
            .collect()
    });
    names.get(&key).copied().unwrap_or("Unknown")
}

/// Whether the codec can decode this version of the API's messages.
pub fn version_supported(key: ApiKey, version: i16) -> bool {
    let range = key.valid_versions();
    (range.min..=range.max).contains(&version)
}

/// A decoded request frame.
#[derive(Debug)]
pub struct RequestFrame {
    /// The API.
    pub api_key: ApiKey,
    /// The request header (API key, version, correlation id, client id).
    pub header: RequestHeader,
    /// The body.
    pub body: RequestKind,
}

/// Why a request is relayed without being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpaqueReason {
    /// The API key is not one the codec knows (an API newer than the codec, or none at all).
    UnknownApiKey,
    /// The codec knows the API but not this version (negative versions included).
    UnsupportedVersion,
    /// The request header does not decode at the version the API version implies.
    MalformedHeader,
    /// The header decodes, the body does not.
    MalformedBody,
}

impl OpaqueReason {
    /// A short fixed label, fit for a metric label.
    pub fn label(self) -> &'static str {
        match self {
            OpaqueReason::UnknownApiKey => "unknown_api_key",
            OpaqueReason::UnsupportedVersion => "unsupported_version",
            OpaqueReason::MalformedHeader => "malformed_header",
            OpaqueReason::MalformedBody => "malformed_body",
        }
    }
}

/// A request frame the codec cannot decode, with what every request header version shares:
/// API key, version and correlation id at fixed places, and (headers v1 and v2) the client id
/// right after them, read when it is a well-formed string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueRequest {
    /// The API key as sent.
    pub api_key: i16,
    /// The API version as sent.
    pub api_version: i16,
    /// The correlation id, which the broker's response repeats.
    pub correlation_id: i32,
    /// The client id, if the bytes after the correlation id read as one.
    pub client_id: Option<String>,
    /// Why it was not decoded.
    pub reason: OpaqueReason,
    /// What the decoder said (for logs).
    pub detail: String,
}

/// A request frame: decoded, or to be relayed as it is.
#[derive(Debug)]
pub enum Request {
    /// Header and body decoded (boxed: a decoded body is far larger than an opaque one).
    Decoded(Box<RequestFrame>),
    /// Not decodable by this codec; relay the frame untouched and its response undecoded.
    Opaque(OpaqueRequest),
}

/// Decodes a request frame (length prefix included).
///
/// Only a frame too short for the fixed header fields (API key, version, correlation id) is an
/// error. Anything else the codec cannot read (an API key or version newer than the codec, a
/// header or body that does not decode) is [`Request::Opaque`]: the proxy stays transparent to
/// clients and brokers newer than itself and lets the broker judge the bytes.
pub fn decode_request(frame: &Bytes) -> Result<Request, FrameError> {
    let mut b = super::frame::body(frame);
    if b.len() < 8 {
        return Err(FrameError::BadLength(b.len() as u32));
    }
    let key = i16::from_be_bytes([b[0], b[1]]);
    let version = i16::from_be_bytes([b[2], b[3]]);
    let fixed = b.clone();
    let opaque = |reason: OpaqueReason, detail: String| {
        let b = &fixed;
        Ok(Request::Opaque(OpaqueRequest {
            api_key: key,
            api_version: version,
            correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            client_id: raw_client_id(&b[8..]),
            reason,
            detail,
        }))
    };
    let Some(api_key) = api_key(key) else {
        return opaque(
            OpaqueReason::UnknownApiKey,
            format!("API key {key} is not one the codec knows"),
        );
    };
    if !version_supported(api_key, version) {
        let range = api_key.valid_versions();
        return opaque(
            OpaqueReason::UnsupportedVersion,
            format!(
                "{} v{version}: the codec knows v{}-{}",
                api_name(key),
                range.min,
                range.max
            ),
        );
    }
    let header = match RequestHeader::decode(&mut b, api_key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return opaque(OpaqueReason::MalformedHeader, format!("header: {e:#}")),
    };
    match RequestKind::decode(api_key, &mut b, version) {
        Ok(body) => Ok(Request::Decoded(Box::new(RequestFrame {
            api_key,
            header,
            body,
        }))),
        Err(e) => opaque(OpaqueReason::MalformedBody, format!("body: {e:#}")),
    }
}

/// The client id of request header v1/v2 (a nullable `i16`-length string after the
/// correlation id), if `rest` starts with a well-formed one.
fn raw_client_id(rest: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    let bytes = rest.get(2..2 + usize::try_from(len).ok()?)?;
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// The correlation id of a response frame (length prefix included), the only header field
/// every response version starts with.
pub fn response_correlation_id(frame: &Bytes) -> Option<i32> {
    if frame.len() < LENGTH_BYTES + 4 {
        return None;
    }
    let b = &frame[LENGTH_BYTES..LENGTH_BYTES + 4];
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response frame (length prefix included) to the request `api_key` v`version`.
/// `Ok(None)` when the codec does not know that version.
pub fn decode_response(
    frame: &Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<Option<(ResponseHeader, ResponseKind)>, String> {
    if !version_supported(api_key, version) {
        return Ok(None);
    }
    let mut b = super::frame::body(frame);
    let header = ResponseHeader::decode(&mut b, api_key.response_header_version(version))
        .map_err(|e| format!("header: {e:#}"))?;
    let rest = b.clone();
    let body = match ResponseKind::decode(api_key, &mut b, version) {
        Ok(body) => body,
        // A broker answers an ApiVersions request of a version it does not know with a v0 body
        // (error UNSUPPORTED_VERSION and its own version ranges, KIP-511).
        Err(_) if api_key == ApiKey::ApiVersions && version > 0 => {
            ResponseKind::decode(api_key, &mut rest.clone(), 0)
                .map_err(|e| format!("body: {e:#}"))?
        }
        Err(e) => return Err(format!("body: {e:#}")),
    };
    Ok(Some((header, body)))
}

/// Encodes a response (header and body) as a frame with its length prefix.
pub fn encode_response(
    header: &ResponseHeader,
    body: &ResponseKind,
    api_key: ApiKey,
    version: i16,
) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, api_key.response_header_version(version))
        .map_err(|e| format!("header: {e:#}"))?;
    body.encode(&mut out, version)
        .map_err(|e| format!("body: {e:#}"))?;
    let len = out.len() - LENGTH_BYTES;
    let len = i32::try_from(len).map_err(|_| format!("{len} bytes exceed a frame"))?;
    out[..LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// Encodes a request (header and body) as a frame with its length prefix (used by tests and
/// benchmarks to speak Kafka without a client library).
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> Result<Bytes, String> {
    let key = api_key(header.request_api_key)
        .ok_or_else(|| format!("unknown API key {}", header.request_api_key))?;
    let version = header.request_api_version;
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, key.request_header_version(version))
        .map_err(|e| format!("header: {e:#}"))?;
    body.encode(&mut out, version)
        .map_err(|e| format!("body: {e:#}"))?;
    let len = out.len() - LENGTH_BYTES;
    let len = i32::try_from(len).map_err(|_| format!("{len} bytes exceed a frame"))?;
    out[..LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// Whether a request gets a response: everything except Produce with `acks = 0`. An
/// undecoded request (`None`) is assumed to get one; if it does not, the next response drops
/// it from the queue of requests awaiting answers.
pub fn expects_response(body: Option<&RequestKind>) -> bool {
    !matches!(body, Some(RequestKind::Produce(p)) if p.acks == 0)
}

/// Appends every non-zero error code in `body` (top level, per topic, partition, group,
/// member) to `out`. Covers the APIs of producers, consumers, consumer groups, transactions and
/// common admin calls; other APIs report their codes only through the response itself.
pub fn error_codes(body: &ResponseKind, out: &mut Vec<i16>) {
    let mut push = |c: i16| {
        if c != 0 {
            out.push(c);
        }
    };
    match body {
        ResponseKind::Produce(r) => {
            for t in &r.responses {
                for p in &t.partition_responses {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::Fetch(r) => {
            push(r.error_code);
            for t in &r.responses {
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::ListOffsets(r) => {
            for t in &r.topics {
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::Metadata(r) => {
            push(r.error_code);
            for t in &r.topics {
                push(t.error_code);
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::OffsetCommit(r) => {
            for t in &r.topics {
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::TxnOffsetCommit(r) => {
            for t in &r.topics {
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
        }
        ResponseKind::OffsetFetch(r) => {
            push(r.error_code);
            for t in &r.topics {
                for p in &t.partitions {
                    push(p.error_code);
                }
            }
            for g in &r.groups {
                push(g.error_code);
                for t in &g.topics {
                    for p in &t.partitions {
                        push(p.error_code);
                    }
                }
            }
        }
        ResponseKind::FindCoordinator(r) => {
            push(r.error_code);
            for c in &r.coordinators {
                push(c.error_code);
            }
        }
        ResponseKind::JoinGroup(r) => push(r.error_code),
        ResponseKind::Heartbeat(r) => push(r.error_code),
        ResponseKind::SyncGroup(r) => push(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            push(r.error_code);
            for m in &r.members {
                push(m.error_code);
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for g in &r.groups {
                push(g.error_code);
            }
        }
        ResponseKind::ListGroups(r) => push(r.error_code),
        ResponseKind::DeleteGroups(r) => {
            for g in &r.results {
                push(g.error_code);
            }
        }
        ResponseKind::ConsumerGroupHeartbeat(r) => push(r.error_code),
        ResponseKind::ApiVersions(r) => push(r.error_code),
        ResponseKind::SaslHandshake(r) => push(r.error_code),
        ResponseKind::SaslAuthenticate(r) => push(r.error_code),
        ResponseKind::InitProducerId(r) => push(r.error_code),
        ResponseKind::AddOffsetsToTxn(r) => push(r.error_code),
        ResponseKind::EndTxn(r) => push(r.error_code),
        ResponseKind::CreateTopics(r) => {
            for t in &r.topics {
                push(t.error_code);
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for t in &r.responses {
                push(t.error_code);
            }
        }
        ResponseKind::DescribeCluster(r) => push(r.error_code),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::StrBytes;

    fn header(key: ApiKey, version: i16, corr: i32) -> RequestHeader {
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = corr;
        h.client_id = Some(StrBytes::from_static_str("test-client"));
        h
    }

    #[test]
    fn names() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(999), "Unknown");
    }

    /// The decoded frame, or a panic naming why it was left opaque.
    fn decoded(frame: &Bytes) -> RequestFrame {
        match decode_request(frame).unwrap() {
            Request::Decoded(r) => *r,
            Request::Opaque(o) => panic!("opaque: {o:?}"),
        }
    }

    fn opaque(frame: &[u8]) -> OpaqueRequest {
        match decode_request(&Bytes::copy_from_slice(frame)).unwrap() {
            Request::Opaque(o) => o,
            Request::Decoded(r) => panic!("decoded: {r:?}"),
        }
    }

    #[test]
    fn request_round_trip_every_metadata_version() {
        let range = ApiKey::Metadata.valid_versions();
        for v in range.min..=range.max {
            let body = RequestKind::Metadata(MetadataRequest::default());
            let frame = encode_request(&header(ApiKey::Metadata, v, v as i32), &body).unwrap();
            let d = decoded(&frame);
            assert_eq!(d.header.correlation_id, v as i32);
            assert_eq!(d.header.client_id.as_deref(), Some("test-client"));
            assert!(matches!(d.body, RequestKind::Metadata(_)), "v{v}");
        }
    }

    #[test]
    fn what_the_codec_cannot_read_is_opaque_with_its_header_fields() {
        // An API key Kafka has not defined (yet): header v1 fields are still read.
        let mut raw = BytesMut::new();
        raw.put_i32(14);
        raw.put_i16(999);
        raw.put_i16(0);
        raw.put_i32(1);
        raw.put_i16(4);
        raw.put_slice(b"newc");
        let o = opaque(&raw);
        assert_eq!(
            (o.api_key, o.api_version, o.correlation_id, o.reason),
            (999, 0, 1, OpaqueReason::UnknownApiKey)
        );
        assert_eq!(o.client_id.as_deref(), Some("newc"));
        // A null client id, and one whose length runs past the frame.
        raw[12..14].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(opaque(&raw).client_id, None);
        raw[12..14].copy_from_slice(&100i16.to_be_bytes());
        assert_eq!(opaque(&raw).client_id, None);

        // ApiVersions v99 and v-1: known API, unknown versions.
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let frame = encode_request(&header(ApiKey::ApiVersions, 3, 5), &body).unwrap();
        for v in [99i16, -1] {
            let mut patched = frame.to_vec();
            patched[6..8].copy_from_slice(&v.to_be_bytes());
            let o = opaque(&patched);
            assert_eq!(o.reason, OpaqueReason::UnsupportedVersion, "v{v}");
            assert_eq!((o.correlation_id, o.api_version), (5, v));
            assert_eq!(o.client_id.as_deref(), Some("test-client"));
        }
        assert!(matches!(decoded(&frame).body, RequestKind::ApiVersions(_)));

        // Metadata v12 whose topic array claims more entries than the body holds.
        let mut cut = encode_request(
            &header(ApiKey::Metadata, 12, 8),
            &RequestKind::Metadata(MetadataRequest::default()),
        )
        .unwrap()
        .to_vec();
        let at = cut.len() - 4; // topics (compact nullable array), then 3 one-byte fields
        cut[at] = 0x7f;
        let o = opaque(&cut);
        assert_eq!(o.reason, OpaqueReason::MalformedBody, "{o:?}");
        assert_eq!(o.correlation_id, 8);

        // Too short for the fixed fields: the only error left.
        assert_eq!(
            decode_request(&Bytes::from_static(&[0, 0, 0, 4, 0, 18, 0, 0])).unwrap_err(),
            FrameError::BadLength(4)
        );
    }

    #[test]
    fn response_round_trip() {
        let mut r = MetadataResponse::default();
        r.error_code = 0;
        let mut hdr = ResponseHeader::default();
        hdr.correlation_id = 77;
        for v in [0, 9, 12] {
            let frame = encode_response(
                &hdr,
                &ResponseKind::Metadata(r.clone()),
                ApiKey::Metadata,
                v,
            )
            .unwrap();
            assert_eq!(response_correlation_id(&frame), Some(77));
            let (h, body) = decode_response(&frame, ApiKey::Metadata, v)
                .unwrap()
                .unwrap();
            assert_eq!(h.correlation_id, 77);
            assert!(matches!(body, ResponseKind::Metadata(_)));
        }
    }

    #[test]
    fn hostile_array_length_is_an_error_not_an_abort() {
        // Metadata v0 response claiming 2^31-1 brokers in a 10-byte body. Unpatched
        // kafka-protocol reserved room for all of them up front and the allocator aborted.
        let mut raw = BytesMut::new();
        raw.put_i32(10);
        raw.put_i32(1); // correlation id
        raw.put_i32(i32::MAX); // broker count
        raw.put_i16(0);
        let err = decode_response(&raw.freeze(), ApiKey::Metadata, 0).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn api_versions_fallback_to_v0() {
        use kafka_protocol::messages::ApiVersionsResponse;
        let mut r = ApiVersionsResponse::default();
        r.error_code = 35; // UNSUPPORTED_VERSION
        let mut hdr = ResponseHeader::default();
        hdr.correlation_id = 9;
        let v0 =
            encode_response(&hdr, &ResponseKind::ApiVersions(r), ApiKey::ApiVersions, 0).unwrap();
        // The client asked with v4; the broker answered in v0.
        let (h, body) = decode_response(&v0, ApiKey::ApiVersions, 4)
            .unwrap()
            .unwrap();
        assert_eq!(h.correlation_id, 9);
        let mut codes = Vec::new();
        error_codes(&body, &mut codes);
        assert_eq!(codes, vec![35]);
    }

    #[test]
    fn known_tag_outside_its_versions_is_tolerated() {
        // tansu 0.6 sends Fetch v12 responses carrying tag 0 (node_endpoints, defined from v16).
        let mut hdr = ResponseHeader::default();
        hdr.correlation_id = 3;
        let body = ResponseKind::Fetch(kafka_protocol::messages::FetchResponse::default());
        let frame = encode_response(&hdr, &body, ApiKey::Fetch, 12).unwrap();
        let mut raw = frame[..frame.len() - 1].to_vec();
        assert_eq!(frame[frame.len() - 1], 0, "no tagged fields at the end");
        raw.extend_from_slice(&[1, 0, 1, 1]); // one tag: 0, size 1, empty compact array
        let len = (raw.len() - 4) as i32;
        raw[..4].copy_from_slice(&len.to_be_bytes());
        let raw = Bytes::from(raw);
        let (h, body) = decode_response(&raw, ApiKey::Fetch, 12).unwrap().unwrap();
        let ResponseKind::Fetch(f) = &body else {
            panic!("not fetch")
        };
        assert!(f.node_endpoints.is_empty());
        // Re-encoding gives a valid v12 message without the misplaced tag.
        assert_eq!(
            encode_response(&h, &body, ApiKey::Fetch, 12).unwrap(),
            frame
        );
    }

    /// The fuzz seeds are Kafka encodings written independently (by `fuzz/seeds.py`, from the
    /// protocol spec): each must decode here.
    #[test]
    fn independent_encodings_decode() {
        use crate::wire::records::{decode_batches, Detail, Limits};
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/wire_decode");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let rest = Bytes::copy_from_slice(&data[1..]);
            match data[0] {
                0 => {
                    let mut r = super::super::frame::FrameReader::new(1 << 20, 8);
                    r.buffer().extend_from_slice(&rest);
                    while let Some(f) = r.next_frame().unwrap() {
                        let req = match decode_request(&f) {
                            Ok(Request::Decoded(r)) => r,
                            other => panic!("{name}: {other:?}"),
                        };
                        if let RequestKind::Produce(p) = &req.body {
                            let recs = p.topic_data[0].partition_data[0].records.as_ref().unwrap();
                            let b = decode_batches(recs, Detail::Records, &Limits::default())
                                .unwrap_or_else(|e| panic!("{name}: {e}"));
                            assert_eq!(b[0].records.len(), 3, "{name}");
                        }
                    }
                    assert!(r.finish().is_ok(), "{name}");
                }
                1 => {
                    let key = api_key(i16::from_be_bytes([rest[0], rest[1]])).unwrap();
                    let version = i16::from_be_bytes([rest[2], rest[3]]);
                    let mut f = BytesMut::new();
                    f.put_i32((rest.len() - 4) as i32);
                    f.extend_from_slice(&rest[4..]);
                    let (_, body) = decode_response(&f.freeze(), key, version)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .unwrap();
                    if let ResponseKind::Fetch(r) = &body {
                        let recs = r.responses[0].partitions[0].records.as_ref().unwrap();
                        let b = decode_batches(recs, Detail::Records, &Limits::default()).unwrap();
                        assert_eq!(b.len(), 2, "{name}");
                    }
                }
                _ => {
                    let b = decode_batches(&rest, Detail::Records, &Limits::default())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(b[0].records.len(), 3, "{name}");
                    assert_eq!(
                        b[0].records[0].key.as_deref(),
                        Some(&b"location_1"[..]),
                        "{name}"
                    );
                }
            }
            seen += 1;
        }
        assert!(seen >= 10, "only {seen} seeds in {}", dir.display());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_request_bytes_never_panic(
            key in 0i16..100, version in 0i16..20,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            let mut raw = BytesMut::new();
            raw.put_i32((4 + tail.len()) as i32);
            raw.put_i16(key);
            raw.put_i16(version);
            raw.extend_from_slice(&tail);
            let frame = raw.freeze();
            let _ = decode_request(&frame);
            if let Some(k) = api_key(key) {
                let _ = decode_response(&frame, k, version);
            }
        }
    }
}
