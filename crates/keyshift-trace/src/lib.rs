//! Record tracing (issue 4).
