//! The Kafka wire layer, independent of sockets: framing, protocol detection, decoding of
//! request/response frames with the `kafka-protocol` codecs, address rewriting and record-batch
//! decoding. Everything here is synchronous and total: bad bytes give an error, never a panic
//! (the fuzz target in `fuzz/` drives [`frame`], [`codec`] and [`records`] with arbitrary
//! input).
//!
//! A frame is a big-endian `i32` length followed by that many bytes. [`frame::FrameReader`]
//! cuts frames out of a byte stream under a size limit; [`codec::decode_request`] and
//! [`codec::decode_response`] turn one into a header and a typed body (a request the codec
//! cannot read is classified as opaque, to be relayed as it is); [`rewrite`] swaps broker
//! addresses in the responses that carry them; [`records::decode_batches`] reads the record
//! batches inside Produce requests and Fetch responses.

pub mod codec;
pub mod frame;
pub mod records;
pub mod rewrite;

/// Why a frame was refused. Each one closes only the connection it arrived on. A well-framed
/// request the codec cannot decode is not refused: it is relayed opaquely
/// ([`codec::Request::Opaque`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the configured limit (e.g. a frame claiming 2 GiB).
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Claimed length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The length prefix is too small to hold a header.
    #[error("frame length {0} is too small for a header")]
    BadLength(u32),
    /// The stream ended in the middle of a frame.
    #[error("connection ended inside a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received of the frame (prefix included).
        have: usize,
        /// Bytes the frame needed (prefix included).
        want: usize,
    },
    /// More requests awaiting responses than the configured limit.
    #[error("more than {0} requests in flight")]
    TooManyInFlight(usize),
    /// A response frame too short to hold a correlation id.
    #[error("malformed response: {0}")]
    BadResponse(String),
    /// The first bytes are not Kafka and non-Kafka traffic is not relayed.
    #[error("first bytes do not look like Kafka")]
    NotKafka,
}

impl FrameError {
    /// A short fixed label, fit for a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::BadLength(_) => "bad_length",
            FrameError::Truncated { .. } => "truncated",
            FrameError::TooManyInFlight(_) => "too_many_in_flight",
            FrameError::BadResponse(_) => "bad_response",
            FrameError::NotKafka => "not_kafka",
        }
    }
}
