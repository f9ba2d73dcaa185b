//! STUB: helper C replaces this.
/// STUB.
#[derive(Debug, Default)]
pub struct OrderGate {}
/// STUB.
#[derive(Debug, Clone)]
pub struct GateRecord {}
/// STUB.
#[derive(Debug, Clone)]
pub struct Released {}
