//! Errors for nonsensical parameters, shared by every configurable part of the core.

/// A parameter that makes no sense; the message names it and says what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct ParamError {
    /// The parameter as the user spells it (`partitions`, `epsilon`, `zipf-s`, ...).
    pub name: &'static str,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl ParamError {
    /// A parameter error naming `name`.
    pub fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}
