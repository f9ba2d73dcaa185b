//! Fuzzes everything the proxy does with bytes from a peer, without sockets: cutting frames,
//! detection, decoding requests (every API key and version) and responses (given the request's
//! key and version, as the proxy knows them from correlation), rewriting broker addresses and
//! re-encoding, and decoding record batches with every compression codec.
//!
//! Input: one selector byte, then the payload.
//! - `0`: a client byte stream; every frame is decoded as a request, Produce records included.
//! - `1`: API key (2 bytes), version (2 bytes), then a response body (without length prefix).
//! - `2`: a records field (one or more record batches).
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use keyshift_proxy::kafka_protocol::messages::{RequestKind, ResponseKind};
use keyshift_proxy::wire::records::{decode_batches, Detail, Limits};
use keyshift_proxy::wire::{codec, frame, rewrite};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_decompressed_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => requests(rest),
        1 => response(rest),
        _ => {
            let _ = decode_batches(&Bytes::copy_from_slice(rest), Detail::Records, &LIMITS);
        }
    }
});

fn requests(stream: &[u8]) {
    let _ = frame::looks_like_kafka(stream);
    let mut reader = frame::FrameReader::new(1 << 20, frame::MIN_REQUEST_BYTES);
    // Feed in two pieces so partial-frame handling is exercised too.
    let cut = stream.len() / 2;
    for piece in [&stream[..cut], &stream[cut..]] {
        reader.buffer().extend_from_slice(piece);
        let _ = reader.wanted();
        while let Ok(Some(f)) = reader.next_frame() {
            if let Ok(codec::Request::Decoded(req)) = codec::decode_request(&f) {
                let _ = codec::expects_response(Some(&req.body));
                if let RequestKind::Produce(p) = &req.body {
                    for t in &p.topic_data {
                        for part in &t.partition_data {
                            if let Some(r) = &part.records {
                                let _ = decode_batches(r, Detail::Records, &LIMITS);
                            }
                        }
                    }
                }
                let _ = codec::encode_request(&req.header, &req.body);
            }
        }
    }
    let _ = reader.finish();
}

fn response(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let Some(api) = codec::api_key(key) else {
        return;
    };
    let mut f = BytesMut::with_capacity(data.len());
    f.put_i32((data.len() - 4) as i32);
    f.extend_from_slice(&data[4..]);
    let f = f.freeze();
    let _ = codec::response_correlation_id(&f);
    let Ok(Some((header, mut body))) = codec::decode_response(&f, api, version) else {
        return;
    };
    let mut errors = Vec::new();
    codec::error_codes(&body, &mut errors);
    if let ResponseKind::Fetch(r) = &body {
        for t in &r.responses {
            for p in &t.partitions {
                if let Some(recs) = &p.records {
                    let _ = decode_batches(recs, Detail::Records, &LIMITS);
                }
            }
        }
    }
    let mut map = |_: &str, _: i32| Some(("127.0.0.1".to_string(), 19092));
    rewrite::rewrite_addresses(&mut body, &mut map);
    let _ = codec::encode_response(&header, &body, api, version);
}
