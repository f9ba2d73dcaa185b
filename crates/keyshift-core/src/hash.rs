//! Kafka's default partitioner, bit-exact with the Java client, and the seed's FNV-1a.
//!
//! Cold keys (those no route table entry overrides) must land exactly where any other Kafka
//! producer would put them, otherwise a keyshift producer and a plain producer writing the same
//! key would split that key's order across partitions. So [`murmur2`] reproduces the Java
//! client's `Utils.murmur2` bit for bit (Java `int` arithmetic is wrapping two's complement, and
//! `>>>` is a logical shift, hence the `u32` working type), and [`kafka_partition`] is
//! `toPositive(murmur2(key)) % partitions`. [`fnv1a32`] is what the SLOPS seed's Go producer
//! used; [`Hasher`] selects between them. Both run once per record and never allocate.

/// Which hash places a key that no route table entry overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hasher {
    /// Kafka's Java default partitioner: `toPositive(murmur2(key)) % n`.
    #[default]
    Murmur2,
    /// The SLOPS seed's choice: `(fnv1a32(key) as i32 & 0x7fffffff) % n`.
    Fnv1a,
}

impl Hasher {
    /// The partition of `key` among `partitions` (> 0).
    ///
    /// # Panics
    /// If `partitions` is 0 (a topic always has at least one partition; callers validate the
    /// user's `partitions` once, up front, with a [`crate::ParamError`]).
    #[inline]
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        self.positive_hash(key) % partitions
    }

    /// The non-negative hash whose remainder by the partition count is the key's partition:
    /// computed once, it gives the key's home under several partition counts.
    #[inline]
    pub fn positive_hash(self, key: &[u8]) -> u32 {
        match self {
            // to_positive's result is in 0..=i32::MAX, so the cast is lossless.
            Hasher::Murmur2 => to_positive(murmur2(key)) as u32,
            // Go's `int32(h) & 0x7fffffff` keeps the low 31 bits, same as masking the u32.
            Hasher::Fnv1a => fnv1a32(key) & 0x7fff_ffff,
        }
    }
}

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), returning the same `int` as Java.
#[inline]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    // Java's `seed ^ length` with `length` an `int`: only the low 32 bits of the length count.
    let mut h = SEED ^ (length as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's `switch (length % 4)` falls through from case 3 to case 1; `h *= m` only runs when
    // there is a tail at all.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, so `i32::MIN` maps to 0).
#[inline]
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// Where Kafka's default partitioner puts `key` among `partitions` (> 0).
///
/// # Panics
/// If `partitions` is 0.
#[inline]
pub fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    // to_positive's result is in 0..=i32::MAX, so the cast is lossless.
    (to_positive(murmur2(key)) as u32) % partitions
}

/// 32-bit FNV-1a, as Go's `hash/fnv.New32a`.
#[inline]
pub fn fnv1a32(data: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    data.iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}
