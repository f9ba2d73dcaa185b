//! The open-loop load generator as a library: a resolved [`LoadConfig`] and a [`Sink`] in, a
//! [`LoadReport`] out. `keyshift loadgen` drives it; tests and other programs can too. (The
//! experiment's own sender, in [`crate::run`], shares its open-loop rule but not this code: it
//! replays one precomputed plan per strategy and triggers the growth step mid-run.)
//!
//! Record i is due at `start + arrival_i.at` (the [`Workload`]'s schedule) and is dispatched at
//! that time whatever happened to earlier records: each send runs in its own task, so a slow
//! response never delays the next send. The value is a [`Probe`] — per-key `seq` from 0 in
//! dispatch order, `sent_us` the record's *scheduled* wall-clock time, body `"<key> message
//! body"` as the seed sends — so a consumer can measure end-to-end latency (including any
//! delay the generator itself added, which avoids coordinated omission) and check order.
//!
//! Concurrency is bounded by `max_in_flight`. When every slot is busy at a record's due time
//! the generator waits for one and counts the record in [`LoadReport::falling_behind`]
//! (with the worst lag in [`LoadReport::max_lag_ms`]) instead of silently turning into a
//! closed loop: a non-zero count means the target (or this machine) could not keep up with
//! the offered rate.
//!
//! Per-key order: a [`Sink`] whose [`Sink::orders_keys`] is true (the Kafka producer, whose
//! routing happens in [`Sink::start`]) is started in dispatch order, which is seq order. Over
//! HTTP, concurrent requests may reach the gateway in any order, so for such sinks the
//! generator keeps at most one request per key in flight: a key's next record is sent when the
//! previous one was answered (it still carries its scheduled `sent_us`, so the wait counts as
//! latency). Other keys are not affected.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyshift_core::probe::Probe;
use keyshift_core::stats::LatencyHistogram;
use keyshift_core::workload::{key_name, Workload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

/// What the load generator runs: which keys when, and how many.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Keys and send times (seeded, reproducible).
    pub workload: Workload,
    /// Records to send (the seed's `--iter`).
    pub records: u64,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// The offered rate in records per second (for the report).
    pub rate: f64,
}

/// A successful send, as far as the sink knows where the record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// Partition, when the sink learns it.
    pub partition: Option<u32>,
    /// Offset, when the sink learns it.
    pub offset: Option<i64>,
}

/// Why a send failed, in words for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// The sink cannot take the record right now (e.g. the producer's queue is full); the
    /// generator retries the same record shortly, keeping the order.
    Busy,
    /// The record failed; the message says why.
    Failed(String),
}

/// The future of one send.
pub type SendFuture = Pin<Box<dyn Future<Output = Result<Ack, String>> + Send>>;

/// Where records go: the gateway over HTTP, the producer directly, or anything else.
pub trait Sink: Send + Sync + 'static {
    /// Starts sending one record. Whatever decides the record's order must happen in this
    /// call (it is made in the order records are dispatched); the returned future completes
    /// when the record is acknowledged or failed.
    fn start(&self, key: &str, value: Vec<u8>) -> Result<SendFuture, SinkError>;

    /// Whether [`Sink::start`] fixes the order of a key's records (so records of one key may
    /// be in flight together). If false, the generator sends one record per key at a time.
    fn orders_keys(&self) -> bool;

    /// Called once after the last record completed (e.g. to flush a producer).
    fn finish(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

/// Most error messages kept for the report (the rest are only counted).
const MAX_ERROR_SAMPLES: usize = 5;
/// How long to wait before retrying a record the sink was too busy to take.
const BUSY_BACKOFF: Duration = Duration::from_millis(2);

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Records dispatched.
    pub sent: u64,
    /// Records acknowledged.
    pub ok: u64,
    /// Records that failed.
    pub errors: u64,
    /// Distinct keys sent.
    pub keys: usize,
    /// Offered rate (records/s).
    pub offered_rate: f64,
    /// Seconds from the first due time to the last dispatch.
    pub dispatch_secs: f64,
    /// Seconds from the first due time until every record completed.
    pub duration_secs: f64,
    /// Records dispatched per second of dispatch (the schedule's rate unless falling behind).
    pub achieved_rate: f64,
    /// Records that found every in-flight slot busy at their due time.
    pub falling_behind: u64,
    /// Worst delay of a dispatch behind its due time, ms.
    pub max_lag_ms: f64,
    /// Response latency (start of the send to its answer) quantiles, ms.
    pub latency_ms: LatencySummary,
    /// A few error messages, for the operator.
    pub error_samples: Vec<String>,
    /// Acknowledged records per partition, when the sink reports partitions.
    pub per_partition: Vec<u64>,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

#[derive(Default)]
struct Outcomes {
    ok: u64,
    errors: u64,
    latency: LatencyHistogram,
    error_samples: Vec<String>,
    per_partition: Vec<u64>,
}

impl Outcomes {
    fn record(&mut self, outcome: Result<Ack, String>, latency: Duration) {
        match outcome {
            Ok(ack) => {
                self.ok += 1;
                self.latency.record_secs(latency.as_secs_f64());
                if let Some(p) = ack.partition {
                    let p = p as usize;
                    if self.per_partition.len() <= p {
                        self.per_partition.resize(p + 1, 0);
                    }
                    self.per_partition[p] += 1;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < MAX_ERROR_SAMPLES {
                    self.error_samples.push(e);
                }
            }
        }
    }
}

/// Microseconds since the Unix epoch of `at`, a monotonic instant, given one known pair.
fn wall_us(anchor_wall_us: u64, anchor: Instant, at: Instant) -> u64 {
    let delta = at.saturating_duration_since(anchor).as_micros() as u64;
    anchor_wall_us + delta
}

/// Sends `config.records` records of `config.workload` to `sink` on the workload's open-loop
/// schedule and reports what happened. Must run on a tokio runtime (sends are spawned tasks).
pub async fn run_load(config: LoadConfig, sink: Arc<dyn Sink>) -> LoadReport {
    let mut workload = config.workload;
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut seqs: HashMap<String, u64> = HashMap::new();
    // For sinks that do not order keys: completion of each key's latest record.
    let mut key_tail: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut falling_behind = 0u64;
    let mut max_lag = Duration::ZERO;
    let start = Instant::now();
    let start_wall_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut last_dispatch = start;
    for _ in 0..config.records {
        let arrival = workload.next().expect("a workload is endless");
        let due = start + Duration::from_secs_f64(arrival.at.max(0.0));
        tokio::time::sleep_until(due).await;
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                falling_behind += 1;
                Arc::clone(&slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let key = key_name(arrival.key);
        let seq = seqs.entry(key.clone()).or_insert(0);
        let probe = Probe {
            seq: *seq,
            sent_us: wall_us(start_wall_us, start, due),
            body: format!("{key} message body"),
        };
        *seq += 1;
        let value = probe.encode();
        let outcomes = Arc::clone(&outcomes);
        if sink.orders_keys() {
            // Start here, in dispatch order; retry a busy sink without letting others pass.
            let began = Instant::now();
            let fut = loop {
                match sink.start(&key, value.clone()) {
                    Ok(f) => break Ok(f),
                    Err(SinkError::Busy) => tokio::time::sleep(BUSY_BACKOFF).await,
                    Err(SinkError::Failed(e)) => break Err(e),
                }
            };
            tasks.spawn(async move {
                let outcome = match fut {
                    Ok(f) => f.await,
                    Err(e) => Err(e),
                };
                let mut o = outcomes.lock().unwrap_or_else(|p| p.into_inner());
                o.record(outcome, began.elapsed());
                drop(permit);
            });
        } else {
            let (done_tx, done_rx) = oneshot::channel();
            let previous = key_tail.insert(key.clone(), done_rx);
            let sink = Arc::clone(&sink);
            tasks.spawn(async move {
                if let Some(prev) = previous {
                    // An error on the channel means the previous task is gone: go on.
                    let _ = prev.await;
                }
                let began = Instant::now();
                let outcome = loop {
                    match sink.start(&key, value.clone()) {
                        Ok(f) => break f.await,
                        Err(SinkError::Busy) => tokio::time::sleep(BUSY_BACKOFF).await,
                        Err(SinkError::Failed(e)) => break Err(e),
                    }
                };
                {
                    let mut o = outcomes.lock().unwrap_or_else(|p| p.into_inner());
                    o.record(outcome, began.elapsed());
                }
                drop(permit);
                let _ = done_tx.send(());
            });
        }
        last_dispatch = Instant::now();
        max_lag = max_lag.max(last_dispatch.saturating_duration_since(due));
        // Reap finished tasks as we go so the set does not grow with the run.
        while let Some(r) = tasks.try_join_next() {
            propagate_panic(r);
        }
    }
    while let Some(r) = tasks.join_next().await {
        propagate_panic(r);
    }
    if let Err(e) = sink.finish().await {
        let mut o = outcomes.lock().unwrap_or_else(|p| p.into_inner());
        o.error_samples.push(format!("finishing the sink: {e}"));
    }
    let end = Instant::now();
    let o = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    let dispatch_secs = last_dispatch.saturating_duration_since(start).as_secs_f64();
    LoadReport {
        sent: config.records,
        ok: o.ok,
        errors: o.errors,
        keys: seqs.len(),
        offered_rate: config.rate,
        dispatch_secs,
        duration_secs: end.saturating_duration_since(start).as_secs_f64(),
        achieved_rate: if dispatch_secs > 0.0 {
            config.records as f64 / dispatch_secs
        } else {
            f64::INFINITY
        },
        falling_behind,
        max_lag_ms: max_lag.as_secs_f64() * 1e3,
        latency_ms: if o.latency.is_empty() {
            LatencySummary::default()
        } else {
            LatencySummary {
                p50: o.latency.quantile_ms(0.5),
                p99: o.latency.quantile_ms(0.99),
                max: o.latency.max_ms(),
                mean: o.latency.mean_ms(),
            }
        },
        error_samples: o.error_samples,
        per_partition: o.per_partition,
    }
}

fn propagate_panic(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Sends to the keyshift producer directly (`--bootstrap-servers`).
#[derive(Debug, Clone)]
pub struct ProducerSink {
    producer: keyshift_kafka::KeyshiftProducer,
    flush_timeout: Duration,
}

impl ProducerSink {
    /// A sink over `producer`, flushed with `flush_timeout` at the end.
    pub fn new(producer: keyshift_kafka::KeyshiftProducer, flush_timeout: Duration) -> Self {
        ProducerSink {
            producer,
            flush_timeout,
        }
    }
}

impl Sink for ProducerSink {
    fn start(&self, key: &str, value: Vec<u8>) -> Result<SendFuture, SinkError> {
        match self.producer.try_send(key.as_bytes(), &value, Vec::new()) {
            Ok(pending) => Ok(Box::pin(async move {
                pending
                    .await
                    .map(|d| Ack {
                        partition: Some(d.partition),
                        offset: Some(d.offset),
                    })
                    .map_err(|e| e.to_string())
            })),
            Err(e) if e.is_retryable() => Err(SinkError::Busy),
            Err(e) => Err(SinkError::Failed(e.to_string())),
        }
    }

    fn orders_keys(&self) -> bool {
        true
    }

    fn finish(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.producer
                .close(self.flush_timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Sends to a gateway's `POST /new` over HTTP (`--url`), the seed client's way:
/// `{"key": <key>, "body": <probe JSON>}`. With several gateways each request goes to one drawn
/// at random from a generator seeded with `seed` (several replicas behind no load balancer).
#[derive(Debug)]
pub struct HttpSink {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    pick: Mutex<ChaCha8Rng>,
}

impl HttpSink {
    /// A sink posting to `urls` (at least one), each request limited to `timeout`.
    pub fn new(
        urls: Vec<reqwest::Url>,
        seed: u64,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        assert!(!urls.is_empty(), "HttpSink needs a URL");
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // Enough idle connections for the concurrency the generator allows.
            .pool_max_idle_per_host(usize::MAX)
            .build()?;
        Ok(HttpSink {
            client,
            urls,
            pick: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    fn next_url(&self) -> &reqwest::Url {
        if self.urls.len() == 1 {
            return &self.urls[0];
        }
        let i = self
            .pick
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gen_range(0..self.urls.len());
        &self.urls[i]
    }
}

#[derive(serde::Deserialize)]
struct GatewayAnswer {
    partition: Option<u32>,
    offset: Option<i64>,
    error: Option<String>,
}

impl Sink for HttpSink {
    fn start(&self, key: &str, value: Vec<u8>) -> Result<SendFuture, SinkError> {
        // The probe is JSON text, so it travels as the string "body".
        let body = String::from_utf8(value).map_err(|e| SinkError::Failed(e.to_string()))?;
        let url = self.next_url().clone();
        let request = self
            .client
            .post(url.clone())
            .json(&serde_json::json!({ "key": key, "body": body }));
        Ok(Box::pin(async move {
            let response = request
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
            let answer: Option<GatewayAnswer> = serde_json::from_str(&text).ok();
            if !status.is_success() {
                let reason = answer.and_then(|a| a.error).unwrap_or(text);
                return Err(format!("POST {url}: {status}: {}", reason.trim()));
            }
            Ok(answer.map_or(Ack::default(), |a| Ack {
                partition: a.partition,
                offset: a.offset,
            }))
        }))
    }

    fn orders_keys(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyshift_core::workload::{KeyDist, Schedule};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Records what it was given; answers after `delay`.
    struct Recorder {
        log: Mutex<Vec<(String, Probe, Instant)>>,
        delay: Duration,
        ordered: bool,
        busy_first: AtomicU64,
    }

    impl Sink for Recorder {
        fn start(&self, key: &str, value: Vec<u8>) -> Result<SendFuture, SinkError> {
            if self.busy_first.load(Ordering::Relaxed) > 0 {
                self.busy_first.fetch_sub(1, Ordering::Relaxed);
                return Err(SinkError::Busy);
            }
            let probe = Probe::decode(&value).unwrap();
            self.log
                .lock()
                .unwrap()
                .push((key.to_owned(), probe, Instant::now()));
            let delay = self.delay;
            Ok(Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Ack {
                    partition: Some(1),
                    offset: None,
                })
            }))
        }
        fn orders_keys(&self) -> bool {
            self.ordered
        }
    }

    fn config(records: u64, max_in_flight: usize) -> LoadConfig {
        let keys = KeyDist::uniform(3).unwrap();
        LoadConfig {
            workload: Workload::new(keys, Schedule::uniform(1000.0).unwrap(), 7),
            records,
            max_in_flight,
            rate: 1000.0,
        }
    }

    fn check_sequences(log: &[(String, Probe, Instant)]) {
        let mut next: HashMap<&str, u64> = HashMap::new();
        for (k, p, _) in log {
            let n = next.entry(k).or_insert(0);
            assert_eq!(p.seq, *n, "key {k} out of order");
            assert_eq!(p.body, format!("{k} message body"));
            *n += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_dispatch_does_not_wait_for_answers() {
        // Answers take 1 s, records are due every ms: an open loop has them all in flight.
        for ordered in [true, false] {
            let sink = Arc::new(Recorder {
                log: Mutex::new(Vec::new()),
                delay: Duration::from_secs(1),
                ordered,
                busy_first: AtomicU64::new(if ordered { 3 } else { 0 }),
            });
            let report = run_load(config(30, 1000), sink.clone()).await;
            assert_eq!((report.sent, report.ok, report.errors), (30, 30, 0));
            assert_eq!(report.per_partition, vec![0, 30]);
            let log = sink.log.lock().unwrap();
            check_sequences(&log);
            if ordered {
                assert_eq!(log.len(), 30);
                // With paused time, every dispatch is exactly at its due time: (i / 1000) s,
                // and sent_us steps by exactly 1000 µs.
                let t0 = log[0].2;
                for (i, (_, p, at)) in log.iter().enumerate().skip(1) {
                    assert!(
                        at.duration_since(t0) < Duration::from_secs(1),
                        "record {i} waited for an answer"
                    );
                    assert_eq!(p.sent_us - log[0].1.sent_us, i as u64 * 1000);
                }
                assert_eq!(report.falling_behind, 0);
            } else {
                // One per key in flight: three keys, so at least 10 rounds of 1 s answers.
                assert_eq!(log.len(), 30);
                assert!(report.duration_secs >= 9.0, "{report:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_is_counted_as_falling_behind() {
        let sink = Arc::new(Recorder {
            log: Mutex::new(Vec::new()),
            delay: Duration::from_secs(1),
            ordered: true,
            busy_first: AtomicU64::new(0),
        });
        let report = run_load(config(10, 4), sink.clone()).await;
        assert_eq!(report.ok, 10);
        assert_eq!(report.falling_behind, 6, "{report:?}");
        assert!(report.max_lag_ms >= 990.0, "{report:?}");
        check_sequences(&sink.log.lock().unwrap());
    }
}
