//! Consumer-lag evaluation (issue 6).
