//! Helpers for tests that run the real `keyshift` binary as a child process: where it says it
//! listens, and stopping it with a signal. Every wait is bounded and fails naming the process.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for a child to stop after a signal; generous because the CPU is shared.
const STOP_PATIENCE: Duration = Duration::from_secs(60);

/// The `host:port` after the first `http://` in a banner line such as
/// `keyshift worker: ...; metrics on http://127.0.0.1:41234/metrics`.
pub fn http_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ', '\n', ',', ';']).next())
        .filter(|addr| !addr.is_empty())
        .unwrap_or_else(|| panic!("no http:// address in {line:?}"))
        .to_owned()
}

/// Sends `sig` (`-TERM`, `-KILL`, ...) to `child` and waits, bounded, for its exit status.
pub fn signal_and_wait(child: &mut Child, sig: &str, what: &str) -> ExitStatus {
    let sent = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {sig} {what} failed");
    let deadline = Instant::now() + STOP_PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not stop on {sig}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 GET to the child's HTTP port; returns (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    try_http_get(addr, path)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} (the child's HTTP port): {e}"))
}

/// [`http_get`] for a child that may have exited (or stopped serving) already.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (a `keyshift` subcommand) with stdout piped and returns it with the http
/// address its first stdout line names.
pub fn spawn_listening(cmd: &mut Command) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("keyshift starts");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).expect("first line");
    assert!(!line.is_empty(), "{cmd:?} exited: {:?}", child.wait());
    // Keep reading: a process whose stdout is closed stops at its next line (autoscale
    // prints every decision).
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (Proc(child), http_addr(&line))
}

/// Writes `dir/client.properties`, a Java client configuration for SASL_PLAINTEXT with a
/// SCRAM-SHA-512 JAAS login as `user` whose password is `password` as written in the file
/// (a `${env:...}` or `${file:...}` reference, so the secret stays out of it); its path.
pub fn scram_client_config(
    dir: &std::path::Path,
    user: &str,
    password: &str,
) -> std::path::PathBuf {
    sasl_client_config(dir, "SCRAM-SHA-512", user, password)
}

/// [`scram_client_config`] for `mechanism`: `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN` (each
/// with its JAAS login module, as a Java client's file has it).
pub fn sasl_client_config(
    dir: &std::path::Path,
    mechanism: &str,
    user: &str,
    password: &str,
) -> std::path::PathBuf {
    let module = match mechanism {
        "PLAIN" => "org.apache.kafka.common.security.plain.PlainLoginModule",
        _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
    };
    let file = dir.join("client.properties");
    std::fs::write(
        &file,
        format!(
            "security.protocol=SASL_PLAINTEXT\n\
             sasl.mechanism={mechanism}\n\
             sasl.jaas.config={module} required \
             username=\"{user}\" password=\"{password}\";\n"
        ),
    )
    .expect("write client.properties");
    file
}
