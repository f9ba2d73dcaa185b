//! Cutting length-prefixed frames out of a byte stream, and deciding whether a stream is Kafka.

use bytes::{Buf, Bytes, BytesMut};

use super::FrameError;

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// The smallest request body: api key (2) + api version (2) + correlation id (4).
pub const MIN_REQUEST_BYTES: usize = 8;

/// The smallest response body: correlation id (4).
pub const MIN_RESPONSE_BYTES: usize = 4;

/// Highest API version accepted as plausible by [`looks_like_kafka`]; real versions are < 30.
const MAX_PLAUSIBLE_VERSION: i16 = 127;

/// API keys below this are taken as Kafka-shaped by [`looks_like_kafka`] (Kafka defines < 100).
const MAX_PLAUSIBLE_API_KEY: i16 = 1024;

/// Decides from the first 8 bytes of a client's stream whether it speaks Kafka: a small
/// non-negative API key and a plausible version after the length prefix. The length itself is
/// deliberately not checked, nor whether the key is one the codec knows: an oversized frame on
/// a Kafka-shaped stream is bad Kafka, refused as such (closing the connection with a reason),
/// and an API key newer than the codec is Kafka, relayed frame by frame without decoding. Text protocols fail the check
/// (`GET /` gives key 0x2f..); TLS is recognised by its record header (handshake type 0x16,
/// major version 3), because a ClientHello's length bytes can pass for a key and version.
pub fn looks_like_kafka(first: &[u8]) -> bool {
    if first.len() < LENGTH_BYTES + 4 {
        return false;
    }
    if first[0] == 0x16 && first[1] == 0x03 {
        return false;
    }
    let key = i16::from_be_bytes([first[4], first[5]]);
    let version = i16::from_be_bytes([first[6], first[7]]);
    (0..MAX_PLAUSIBLE_API_KEY).contains(&key) && (0..=MAX_PLAUSIBLE_VERSION).contains(&version)
}

/// Reads frames out of a growing buffer under a size limit.
///
/// Memory stays bounded by the limit: the buffer grows with what the peer actually sent, never
/// by what a length prefix claims.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max_frame: usize,
    min_frame: usize,
}

impl FrameReader {
    /// A reader refusing frames longer than `max_frame` bytes (prefix excluded) or shorter than
    /// `min_frame` (use [`MIN_REQUEST_BYTES`] for requests, [`MIN_RESPONSE_BYTES`] for responses).
    pub fn new(max_frame: usize, min_frame: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame,
            min_frame,
        }
    }

    /// The buffer to read socket bytes into (append only).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes whatever is buffered (for a stream that turned out not to be Kafka).
    pub fn take_all(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// How many more bytes to reserve before the next read: enough for the current frame (at
    /// most 1 MiB at a time, so a claimed-but-unsent length costs nothing).
    pub fn wanted(&self) -> usize {
        const STEP: usize = 1024 * 1024;
        if self.buf.len() < LENGTH_BYTES {
            return 64 * 1024;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let total = LENGTH_BYTES + len as usize;
        total.saturating_sub(self.buf.len()).clamp(8 * 1024, STEP)
    }

    /// The next complete frame (length prefix included), `Ok(None)` if more bytes are needed,
    /// or the reason the stream must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < LENGTH_BYTES {
            return Ok(None);
        }
        // Read as unsigned so a frame "claiming 2 GiB" (0x8000_0000) is reported as too large.
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if (len as usize) < self.min_frame {
            return Err(FrameError::BadLength(len));
        }
        let len = len as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame,
            });
        }
        if self.buf.len() < LENGTH_BYTES + len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(LENGTH_BYTES + len).freeze()))
    }

    /// Called at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let want = if self.buf.len() >= LENGTH_BYTES {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            LENGTH_BYTES + len as usize
        } else {
            LENGTH_BYTES
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            want,
        })
    }
}

/// The body of a frame (without its length prefix).
pub fn body(frame: &Bytes) -> Bytes {
    let mut b = frame.clone();
    b.advance(LENGTH_BYTES.min(b.len()));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn cuts_frames_across_partial_reads() {
        let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
        let mut bytes = frame(&[0, 18, 0, 3, 0, 0, 0, 7]);
        bytes.extend(frame(&[0, 3, 0, 9, 0, 0, 0, 8, 1, 2]));
        for chunk in bytes.chunks(3) {
            r.buffer().extend_from_slice(chunk);
        }
        let a = r.next_frame().unwrap().unwrap();
        assert_eq!(&a[..], &frame(&[0, 18, 0, 3, 0, 0, 0, 7])[..]);
        let b = r.next_frame().unwrap().unwrap();
        assert_eq!(body(&b).len(), 10);
        assert!(r.next_frame().unwrap().is_none());
        assert!(r.finish().is_ok());
    }

    #[test]
    fn refuses_oversized_and_negative_lengths_before_buffering() {
        let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
        r.buffer().extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(FrameError::TooLarge {
                len: 0x7fff_ffff,
                max: 1024
            })
        );
        let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
        r.buffer().extend_from_slice(&0x8000_0000u32.to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(FrameError::TooLarge {
                len: 0x8000_0000,
                max: 1024
            })
        );
        let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
        r.buffer().extend_from_slice(&3i32.to_be_bytes());
        assert_eq!(r.next_frame(), Err(FrameError::BadLength(3)));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
        r.buffer().extend_from_slice(&frame(&[0; 20])[..10]);
        assert!(r.next_frame().unwrap().is_none());
        assert_eq!(
            r.finish(),
            Err(FrameError::Truncated { have: 10, want: 24 })
        );
    }

    proptest::proptest! {
        /// However a stream of frames is cut into reads, the same frames come out.
        #[test]
        fn any_read_boundaries_give_the_same_frames(
            bodies in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 8..200), 1..20),
            cuts in proptest::collection::vec(1usize..300, 1..50),
        ) {
            let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
            let mut r = FrameReader::new(1024, MIN_REQUEST_BYTES);
            let mut out = Vec::new();
            let (mut pos, mut i) = (0, 0);
            while pos < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - pos);
                r.buffer().extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                i += 1;
                while let Some(f) = r.next_frame().unwrap() {
                    out.push(body(&f).to_vec());
                }
            }
            proptest::prop_assert_eq!(out, bodies);
            proptest::prop_assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn detection() {
        // ApiVersions v3, correlation 1.
        assert!(looks_like_kafka(&frame(&[0, 18, 0, 3, 0, 0, 0, 1])));
        // A 2 GiB Produce is still Kafka (refused later for its size).
        let mut big = 0x7fff_ffffi32.to_be_bytes().to_vec();
        big.extend_from_slice(&[0, 0, 0, 9]);
        assert!(looks_like_kafka(&big));
        assert!(!looks_like_kafka(b"GET / HTTP/1.1\r\n"));
        // TLS ClientHello.
        assert!(!looks_like_kafka(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01
        ]));
        // An unknown API key (999) on a Kafka-shaped stream is Kafka (relayed undecoded).
        let mut unknown = 12i32.to_be_bytes().to_vec();
        unknown.extend_from_slice(&999i16.to_be_bytes());
        unknown.extend_from_slice(&[0, 1, 0, 0]);
        assert!(looks_like_kafka(&unknown));
        assert!(!looks_like_kafka(&[0, 0, 0]));
    }
}
