//! Helpers shared by the gateway and loadgen tests: an embedded broker with a topic, the real
//! `keyshift` binary as a child process, a read-back of the topic with a plain rdkafka
//! consumer, and a parser for the Prometheus text exposition.
//!
//! Every wait is bounded by [`PATIENCE`] and fails naming what it waited for.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyshift_core::protocol::{is_fence, RouteHeader, FENCE_HEADER, ROUTE_HEADER};
use keyshift_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Upper bound for any wait; generous because the CPU is shared.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// One record as read back from the log.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: u32,
    pub offset: i64,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: usize,
    /// Its decoded `keyshift-route` header, if it has a readable one.
    pub route: Option<RouteHeader>,
    /// A keyshift fence (its header or the reserved value), which is no application record.
    pub fence: bool,
}

/// A fresh embedded broker with `topic` of `partitions` partitions.
pub fn broker_with_topic(topic: &str, partitions: u32) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start().expect("embedded broker starts");
    broker
        .create_topic(topic, partitions)
        .expect("topic is created");
    broker
}

/// Reads every partition of `topic` from the beginning up to its current end offset, in
/// partition order then offset order.
pub fn read_all(broker: &EmbeddedBroker, topic: &str) -> Vec<Rec> {
    static GROUP: AtomicU64 = AtomicU64::new(0);
    let ends = broker.admin().end_offsets(topic).expect("end offsets");
    let group = format!(
        "readback-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, Ordering::Relaxed)
    );
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config(&group)
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..ends.len() as i32 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut logs: Vec<Vec<Rec>> = vec![Vec::new(); ends.len()];
    let deadline = Instant::now() + PATIENCE;
    let done = |logs: &Vec<Vec<Rec>>| {
        logs.iter()
            .zip(&ends)
            .all(|(log, &end)| log.last().map_or(-1, |r| r.offset) + 1 >= end)
    };
    while !done(&logs) {
        assert!(
            Instant::now() < deadline,
            "reading back {topic}: got {:?} records per partition, end offsets {ends:?}",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        let rec = Rec {
            fence: is_fence(header(&message, FENCE_HEADER).is_some(), message.payload()),
            partition: message.partition() as u32,
            offset: message.offset(),
            key: String::from_utf8(message.key().unwrap_or_default().to_vec()).expect("utf-8 key"),
            value: message.payload().unwrap_or_default().to_vec(),
            headers: message.headers().map_or(0, |h| h.count()),
            route: header(&message, ROUTE_HEADER).and_then(|v| RouteHeader::decode(v).ok()),
        };
        logs[rec.partition as usize].push(rec);
    }
    logs.into_iter().flatten().collect()
}

/// The value of `message`'s header `name`, if present.
fn header<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

/// The `keyshift` binary under test.
pub fn keyshift() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyshift"));
    c.env("RUST_LOG", "warn");
    c
}

/// A running `keyshift gateway`, killed on drop if still running.
pub struct GatewayProcess {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl GatewayProcess {
    /// Starts the gateway on a free port with `extra` flags and waits for its listening line.
    pub fn start(bootstrap: &str, topic: &str, extra: &[&str]) -> Self {
        let mut child = keyshift()
            .args([
                "gateway",
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
            ])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("keyshift gateway starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // The first line names the bound address; reading blocks until it is printed or the
        // process exits (EOF), so no timing is involved.
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the gateway's first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("gateway did not print its address, got {line:?}"));
        GatewayProcess {
            base: format!("http://{addr}"),
            child,
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        self.wait()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples of a Prometheus text exposition: `name{labels}` → value, labels as written.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("malformed value in {line:?}"));
        out.insert(series.to_owned(), value);
    }
    out
}

/// A current-thread runtime for the HTTP side of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
