//! The `keyshift` command line: thin wiring from flags to the libraries.

fn main() {}
