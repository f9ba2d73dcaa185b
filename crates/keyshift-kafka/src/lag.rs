//! Consumer-group lag collection (issue 6).
