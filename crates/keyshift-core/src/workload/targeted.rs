//! STUB: helper A replaces this.
/// STUB.
#[derive(Debug, Clone)]
pub struct Targeted {}
