//! The two record headers of a fenced migration and their compact, versioned binary codec.
//!
//! A [`FenceHeader`] (header name [`FENCE_HEADER`]) marks the fence record the producer writes
//! on a key's old partition; a [`RouteHeader`] (header name [`ROUTE_HEADER`]) rides on the
//! records of the key's new message set and tells the consumer which fence they wait for.
//!
//! # Wire format (version 1)
//!
//! ```text
//! byte 0      version, always 0x01 for this layout
//! then        each field as an unsigned LEB128 varint (7 bits per byte, low group first,
//!             high bit set on every byte but the last), in declaration order
//!
//! keyshift-route:  0x01 | set_index (u32) | from_partition (u32) | fence_offset (u64, ≤ i64::MAX)
//! keyshift-fence:  0x01 | set_index (u32) | to_partition (u32)
//! ```
//!
//! Worked test vector: `RouteHeader { set_index: 3, from_partition: 7, fence_offset: 300 }`
//! encodes as `[0x01, 0x03, 0x07, 0xAC, 0x02]` — version 1, 3, 7, and 300 = 0b10_0101100, whose
//! low 7 bits `0101100` go first with the continuation bit (`0xAC`) followed by `0b10` (`0x02`).
//! `FenceHeader { set_index: 3, to_partition: 7 }` encodes as `[0x01, 0x03, 0x07]`.
//!
//! Varints keep a typical header at 4–8 bytes (small partitions and set indexes take one byte;
//! offsets up to 2^28 take four) while leaving room for any `u32`/`i64`. Decoding is strict: a
//! varint longer or larger than its field allows is [`HeaderError::Overflow`], bytes after the
//! last field are [`HeaderError::TrailingBytes`]; nothing is guessed. A future version
//! gets a new version byte; this build reports it as [`HeaderError::UnknownVersion`] and the
//! consumer hands such records to the application marked unordered — never a panic, never a
//! silent drop.

/// Name of the record header that marks a fence.
pub const FENCE_HEADER: &str = "keyshift-fence";
/// Name of the record header that carries a route.
pub const ROUTE_HEADER: &str = "keyshift-route";

/// The value of every fence record: a reserved 16-byte marker, so that a fence is recognisable
/// without its headers — by a plain consumer that never reads headers, by a tool that strips
/// them, or by a person reading the topic with a console consumer. It starts with a NUL byte and
/// ends with the layout version, so it is neither text an application would write by chance nor
/// ambiguous with an application's empty value (fences before this marker had an empty value;
/// the [`FENCE_HEADER`] remains the authoritative mark and is still written).
pub const FENCE_VALUE: &[u8; 16] = b"\0keyshift-fence\x01";

/// Whether a record is a keyshift fence: it carries [`FENCE_HEADER`] (`has_fence_header`), or
/// its value is exactly [`FENCE_VALUE`]. Tools that read a keyshift topic skip such records; the
/// ordered consumer never gives them to the application.
pub fn is_fence(has_fence_header: bool, value: Option<&[u8]>) -> bool {
    has_fence_header || value == Some(FENCE_VALUE.as_slice())
}

/// The only layout version this build writes and reads.
pub(super) const VERSION: u8 = 1;

/// Header of every record of a key's new message set: the fence its set waits for.
///
/// A consumer may process such a record only once the group's committed offset of
/// `from_partition` is greater than `fence_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteHeader {
    /// Which message set of the key this record belongs to (counts moves; diagnostic).
    pub set_index: u32,
    /// The partition the key's previous set went to (where the fence was written).
    pub from_partition: u32,
    /// Offset of the fence record on `from_partition` (a Kafka offset, never negative).
    pub fence_offset: i64,
}

/// Header of a fence record, written on the key's old partition to close its message set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FenceHeader {
    /// Index of the set the key moves into.
    pub set_index: u32,
    /// The partition the key's records go to after the fence.
    pub to_partition: u32,
}

/// Why a header value could not be decoded; each message names the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header value has no bytes at all.
    #[error("{header} header is empty (expected a version byte and fields)")]
    Empty {
        /// Header name ([`ROUTE_HEADER`] or [`FENCE_HEADER`]).
        header: &'static str,
    },
    /// The version byte is not one this build reads.
    #[error("{header} header has unknown version {version} (this build reads version 1)")]
    UnknownVersion {
        /// Header name.
        header: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The bytes end in the middle of, or before, a field.
    #[error("{header} header is truncated: field {field} is missing or incomplete")]
    Truncated {
        /// Header name.
        header: &'static str,
        /// The field that could not be read.
        field: &'static str,
    },
    /// A varint is longer or larger than its field's type allows.
    #[error("{header} header field {field} overflows its integer type")]
    Overflow {
        /// Header name.
        header: &'static str,
        /// The field that overflowed.
        field: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{header} header has {extra} unexpected trailing byte(s) after its last field")]
    TrailingBytes {
        /// Header name.
        header: &'static str,
        /// How many bytes remained.
        extra: usize,
    },
    /// A fence offset is negative (Kafka offsets of written records never are).
    #[error("keyshift-route header: fence_offset must be >= 0, found {0}")]
    NegativeOffset(i64),
    /// Every field decoded, but together they describe nothing valid.
    #[error("{header} is invalid: {reason}")]
    Invalid {
        /// Name of the value.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl RouteHeader {
    /// A route header, refusing a negative fence offset.
    pub fn new(
        set_index: u32,
        from_partition: u32,
        fence_offset: i64,
    ) -> Result<Self, HeaderError> {
        if fence_offset < 0 {
            return Err(HeaderError::NegativeOffset(fence_offset));
        }
        Ok(Self {
            set_index,
            from_partition,
            fence_offset,
        })
    }

    /// The encoded header value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 5 + 5 + 10);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded header value to `out`.
    ///
    /// A negative `fence_offset` is a caller bug (use [`RouteHeader::new`] to rule it out): it
    /// is written as its two's-complement `u64`, which [`RouteHeader::decode`] then rejects as
    /// [`HeaderError::NegativeOffset`] rather than misreading it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        debug_assert!(self.fence_offset >= 0, "negative fence offset");
        out.push(VERSION);
        put_varint(out, u64::from(self.set_index));
        put_varint(out, u64::from(self.from_partition));
        put_varint(out, self.fence_offset as u64);
    }

    /// Decodes a header value written by [`RouteHeader::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(ROUTE_HEADER, bytes)?;
        let set_index = r.u32("set_index")?;
        let from_partition = r.u32("from_partition")?;
        let fence_offset = r.last_offset("fence_offset")?;
        Ok(Self {
            set_index,
            from_partition,
            fence_offset,
        })
    }
}

impl FenceHeader {
    /// The encoded header value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 5 + 5);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded header value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        put_varint(out, u64::from(self.set_index));
        put_varint(out, u64::from(self.to_partition));
    }

    /// Decodes a header value written by [`FenceHeader::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(FENCE_HEADER, bytes)?;
        let set_index = r.u32("set_index")?;
        let to_partition = r.u32("to_partition")?;
        r.finish()?;
        Ok(Self {
            set_index,
            to_partition,
        })
    }
}

/// Unsigned LEB128.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Cursor over a header value that has passed its version check (also reads the route-state
/// value of [`super::route_state`], which shares the layout rules).
pub(super) struct Reader<'a> {
    header: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(header: &'static str, bytes: &'a [u8]) -> Result<Self, HeaderError> {
        match bytes.split_first() {
            None => Err(HeaderError::Empty { header }),
            Some((&VERSION, rest)) => Ok(Self { header, rest }),
            Some((&version, _)) => Err(HeaderError::UnknownVersion { header, version }),
        }
    }

    /// A varint of at most `max_bytes` bytes whose value fits `max`.
    fn varint(
        &mut self,
        field: &'static str,
        max_bytes: usize,
        max: u64,
    ) -> Result<u64, HeaderError> {
        let header = self.header;
        let mut value: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate() {
            if i == max_bytes {
                return Err(HeaderError::Overflow { header, field });
            }
            let group = u64::from(b & 0x7f);
            let shift = 7 * i as u32;
            // The last permitted byte may only carry the bits the type has left.
            if shift > 0 && group > (max >> shift) {
                return Err(HeaderError::Overflow { header, field });
            }
            value |= group << shift;
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(HeaderError::Truncated { header, field })
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, HeaderError> {
        self.varint(field, 5, u64::from(u32::MAX)).map(|v| v as u32)
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, HeaderError> {
        self.varint(field, 10, u64::MAX)
    }

    /// Bytes not read yet (an upper bound on how many more fields can follow).
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A byte string: its length as a varint, then the bytes.
    pub(super) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], HeaderError> {
        let len = self.varint(field, 5, u64::from(u32::MAX))? as usize;
        if self.rest.len() < len {
            return Err(HeaderError::Truncated {
                header: self.header,
                field,
            });
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    /// The last field of the route header and of a route-state value: a fence offset (a
    /// `u64` varint that must fit `i64`), then nothing.
    pub(super) fn last_offset(mut self, field: &'static str) -> Result<i64, HeaderError> {
        let raw = self.u64(field)?;
        self.finish()?;
        i64::try_from(raw).map_err(|_| HeaderError::NegativeOffset(raw as i64))
    }

    pub(super) fn finish(self) -> Result<(), HeaderError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(HeaderError::TrailingBytes {
                header: self.header,
                extra: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_limits_are_exact() {
        let max = RouteHeader {
            set_index: u32::MAX,
            from_partition: u32::MAX,
            fence_offset: i64::MAX,
        };
        assert_eq!(RouteHeader::decode(&max.encode()), Ok(max));
        // u32::MAX + 1 in five bytes: the fifth byte carries a bit u32 does not have.
        let too_big = [0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x00];
        assert_eq!(
            RouteHeader::decode(&too_big),
            Err(HeaderError::Overflow {
                header: ROUTE_HEADER,
                field: "set_index"
            })
        );
        // A sixth byte for a u32 is an overflow even if it would add nothing.
        let too_long = [0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x00];
        assert_eq!(
            RouteHeader::decode(&too_long),
            Err(HeaderError::Overflow {
                header: ROUTE_HEADER,
                field: "set_index"
            })
        );
    }
}
