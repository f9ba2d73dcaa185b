//! Space-Saving (Metwally et al.) with the O(1) stream-summary. STUB: helper B replaces this.
use crate::ParamError;

/// Space-Saving sketch. STUB.
#[derive(Debug, Clone)]
pub struct SpaceSaving {}

impl SpaceSaving {
    /// `capacity` counters; rates decay with `half_life_secs`.
    pub fn new(capacity: usize, half_life_secs: f64) -> Result<Self, ParamError> {
        todo!("helper B {capacity} {half_life_secs}")
    }
}
