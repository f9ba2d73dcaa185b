#!/usr/bin/env python3
"""Writes the seed inputs of the `wire_decode` fuzz target to fuzz/seeds/wire_decode/.

Each seed is a selector byte (see fuzz_targets/wire_decode.rs) and a real Kafka encoding built
here from the protocol spec, so the fuzzer starts from valid requests, responses and record
batches (every compression codec) instead of having to discover the formats.
Needs the `zstd` and `lz4` command-line tools for those two codecs.

    python3 fuzz/seeds.py
"""
import gzip
import os
import struct
import subprocess

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "wire_decode")


def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)


def uvarint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def varint(v):
    return uvarint((v << 1) ^ (v >> 63))


def string(s): return i16(len(s)) + s
def nstring(s): return i16(-1) if s is None else string(s)
def cstring(s): return uvarint(len(s) + 1) + s
def array(items): return i32(len(items)) + b"".join(items)
def carray(items): return uvarint(len(items) + 1) + b"".join(items)
def bytes_(b): return i32(-1) if b is None else i32(len(b)) + b
def cbytes(b): return uvarint(0) if b is None else uvarint(len(b) + 1) + b
TAGS = uvarint(0)  # no tagged fields


def record(i, key, value, headers):
    body = i8(0) + varint(i * 5) + varint(i)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        body += varint(len(hk)) + hk
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + body


def records_section():
    return b"".join([
        record(0, b"location_1", b"v" * 20, [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]),
        record(1, None, b"tombstone?", []),
        record(2, b"location_2", None, [(b"h", None)]),
    ])


def batch(codec, section, count=3):
    after_len = i32(0) + i8(2) + struct.pack(">I", 0) + i16(codec) + i32(count - 1) \
        + i64(1_700_000_000_000) + i64(1_700_000_000_010) + i64(-1) + i16(-1) + i32(-1) + i32(count) + section
    return i64(0) + i32(len(after_len)) + after_len


def snappy_raw(data):
    # A valid raw snappy block made of literals only.
    out = uvarint(len(data))
    for i in range(0, len(data), 60):
        chunk = data[i:i + 60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return out


def tool(cmd, data):
    return subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True).stdout


def frame(body): return i32(len(body)) + body


def req_header(key, version, corr, flexible):
    h = i16(key) + i16(version) + i32(corr) + nstring(b"fuzz-client")
    return h + (TAGS if flexible else b"")


def main():
    os.makedirs(OUT, exist_ok=True)
    sec = records_section()
    batches = {
        "none": batch(0, sec),
        "gzip": batch(1, gzip.compress(sec)),
        "snappy": batch(2, snappy_raw(sec)),
        "snappy_xerial": batch(2, b"\x82SNAPPY\x00" + i32(1) + i32(1) + i32(len(snappy_raw(sec))) + snappy_raw(sec)),
        "lz4": batch(3, tool(["lz4", "-c", "-q"], sec)),
        "zstd": batch(4, tool(["zstd", "-c", "-q"], sec)),
    }
    seeds = {}
    for name, b in batches.items():
        seeds["records_" + name] = b"\x02" + b

    # Requests (selector 0): a stream of frames.
    api_versions_v3 = frame(req_header(18, 3, 1, True) + cstring(b"librdkafka") + cstring(b"2.12.1") + TAGS)
    metadata_v12 = frame(req_header(3, 12, 2, True) + uvarint(0) + b"\x01" + b"\x00" + TAGS)
    produce_v3 = frame(req_header(0, 3, 3, False) + nstring(None) + i16(-1) + i32(30000)
                       + array([string(b"t") + array([i32(0) + bytes_(batches["gzip"])])]))
    produce_v9 = frame(req_header(0, 9, 4, True) + uvarint(0) + i16(1) + i32(30000)
                       + carray([cstring(b"t") + carray([i32(0) + cbytes(batches["zstd"]) + TAGS]) + TAGS]) + TAGS)
    seeds["req_api_versions"] = b"\x00" + api_versions_v3
    seeds["req_stream"] = b"\x00" + api_versions_v3 + metadata_v12 + produce_v3 + produce_v9
    seeds["req_produce_v3"] = b"\x00" + produce_v3
    seeds["req_produce_v9"] = b"\x00" + produce_v9

    # Responses (selector 1): api key, version, then the body without its length.
    metadata_v0 = i32(7) + array([i32(1) + string(b"broker-1") + i32(9092)]) \
        + array([i16(0) + string(b"t") + array([i16(0) + i32(0) + i32(1) + array([i32(1)]) + array([i32(1)])])])
    seeds["resp_metadata_v0"] = b"\x01" + i16(3) + i16(0) + metadata_v0
    find_coord_v4 = i32(8) + TAGS + i32(0) + carray([cstring(b"group") + i32(1) + cstring(b"broker-1") + i32(9092)
                                                     + i16(0) + uvarint(0) + TAGS]) + TAGS
    seeds["resp_find_coordinator_v4"] = b"\x01" + i16(10) + i16(4) + find_coord_v4
    fetch_v4 = i32(9) + i32(0) + array([string(b"t") + array([
        i32(0) + i16(0) + i64(3) + i64(3) + array([]) + bytes_(batches["none"] + batches["lz4"])])])
    seeds["resp_fetch_v4"] = b"\x01" + i16(1) + i16(4) + fetch_v4
    produce_resp_v3 = i32(10) + array([string(b"t") + array([i32(0) + i16(0) + i64(0) + i64(-1)])]) + i32(0)
    seeds["resp_produce_v3"] = b"\x01" + i16(0) + i16(3) + produce_resp_v3

    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {OUT}")


if __name__ == "__main__":
    main()
