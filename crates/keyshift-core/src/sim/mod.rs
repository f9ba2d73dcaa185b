//! A deterministic discrete-event simulator of producer → partitions → consumers.
