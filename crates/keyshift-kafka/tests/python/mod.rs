//! kafka-python (PyPI), the independent second client of the interop tests: a client keyshift
//! did not write. Installed with pip when missing. A missing client fails the test: an interop
//! test that passes without the other client proves nothing. The only way around it is the
//! explicit opt-out `KEYSHIFT_SKIP_KAFKA_PYTHON=1` (for machines with no Python at all), which
//! says loudly what did not run.

use std::process::Command;

/// The environment variable that lets interop tests skip when kafka-python cannot be had.
pub const OPT_OUT: &str = "KEYSHIFT_SKIP_KAFKA_PYTHON";

/// Makes kafka-python importable, installing it first if needed, and answers true. If it cannot
/// be had, `test` fails — unless [`OPT_OUT`] is set to `1`, when it prints that `test` did not
/// run and answers false (the caller returns).
pub fn require_kafka_python(test: &str) -> bool {
    let import = || {
        Command::new("python3")
            .args(["-c", "import kafka"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if import() {
        return true;
    }
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "kafka-python"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && import() {
        return true;
    }
    let why = "kafka-python is not installed and `python3 -m pip install kafka-python` failed \
               (no python3/pip or no access to PyPI)";
    if std::env::var(OPT_OUT).as_deref() == Ok("1") {
        eprintln!("\n\n!!! SKIPPED {test}: {why}; {OPT_OUT}=1 allows it !!!\n\n");
        return false;
    }
    panic!("{test}: {why}. Install it, or set {OPT_OUT}=1 to skip the interop tests explicitly.");
}
