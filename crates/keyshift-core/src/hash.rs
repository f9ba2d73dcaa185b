//! Kafka's default partitioner, bit-exact with the Java client, and the seed's FNV-1a.

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
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        todo!("helper A")
    }
}

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), returning the same `int` as Java.
pub fn murmur2(data: &[u8]) -> i32 {
    todo!("helper A")
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, so `i32::MIN` maps to 0).
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// Where Kafka's default partitioner puts `key` among `partitions` (> 0).
pub fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    todo!("helper A")
}

/// 32-bit FNV-1a, as Go's `hash/fnv.New32a`.
pub fn fnv1a32(data: &[u8]) -> u32 {
    todo!("helper A")
}
