//! STUB: helper A replaces this.
/// STUB.
#[derive(Debug, Clone)]
pub struct Schedule {}
/// STUB.
#[derive(Debug, Clone)]
pub struct Arrivals {}
