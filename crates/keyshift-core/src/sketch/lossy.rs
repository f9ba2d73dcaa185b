//! Lossy Counting as the SLOPS seed implements it. STUB: helper B replaces this.
use crate::ParamError;

/// Lossy counting parameters (seed defaults: epsilon 0.001, support 0.01, sample_threshold 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossyConfig {
    /// ε: the error tolerated; bucket width is ⌊1/ε⌋.
    pub epsilon: f64,
    /// s: a key is hot when its count ≥ (s − ε)·N.
    pub support: f64,
    /// A record is counted when a uniform draw is ≥ this (the seed's `sample_threshold`).
    pub sample_threshold: f64,
    /// Seed of the sampling draws.
    pub seed: u64,
}

/// Lossy counter. STUB.
#[derive(Debug, Clone)]
pub struct LossyCounter {}

impl LossyCounter {
    /// Validates `config` and builds an empty counter.
    pub fn new(config: LossyConfig) -> Result<Self, ParamError> {
        todo!("helper B {config:?}")
    }
}
