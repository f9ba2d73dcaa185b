//! STUB: helper C replaces this.
/// STUB.
#[derive(Debug, Default)]
pub struct Migrator {}
/// STUB.
#[derive(Debug, Clone)]
pub enum Step {}
