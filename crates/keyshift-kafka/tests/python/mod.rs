//! kafka-python (PyPI), the independent second client of the interop tests: a client keyshift
//! did not write. Installed with pip when missing; tests skip loudly only when that fails.

use std::process::Command;

/// Imports kafka-python, installing it first if needed. False if it cannot be had.
pub fn kafka_python_available() -> bool {
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
    installed && import()
}

/// Tells the reader, loudly, that `test` did not run.
pub fn skip(test: &str) {
    eprintln!(
        "\n\n!!! SKIPPED {test}: kafka-python is not installed and `python3 -m pip install \
         kafka-python` failed (no python3/pip or no access to PyPI) !!!\n\n"
    );
}
