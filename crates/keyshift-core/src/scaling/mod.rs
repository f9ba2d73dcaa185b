//! Scaling policy (issue 6).
