//! Shared helpers of the ordered-consumer tests: a fenced test producer built from a plain
//! rdkafka producer and the core's `Migrator` (an independent check of the consumer: it does
//! not use keyshift's own producer), a log of what the application saw, and bounded waits.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyshift_core::hash::Hasher;
use keyshift_core::probe::{Probe, SequenceCheck};
use keyshift_core::protocol::{Migrator, Step, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER};
use keyshift_kafka::{DeliveredRecord, EmbeddedBroker, OrderedConsumer, OrderedConsumerBuilder};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Upper bound for any wait on the broker; generous because the CPU is shared.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Logs to stderr when KEYSHIFT_TEST_TRACE is set (filter with RUST_LOG).
pub fn trace() {
    if std::env::var_os("KEYSHIFT_TEST_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Waits until `done()` holds, polling every 20 ms; panics naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let mut reported = false;
    while !done() {
        if std::env::var_os("KEYSHIFT_TEST_TRACE").is_some()
            && started.elapsed().as_millis() % 2000 < 20
        {
            eprintln!("[{:?}] waiting for {what}", started.elapsed());
        }
        if !reported && started.elapsed() > Duration::from_secs(10) {
            eprintln!("still waiting for {what} after 10 s");
            reported = true;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if std::env::var_os("KEYSHIFT_TEST_TRACE").is_some() {
        eprintln!("[{:?}] done: {what}", started.elapsed());
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One record as the application saw it, in global processing order.
#[derive(Debug, Clone)]
pub struct Seen {
    pub consumer: String,
    pub partition: u32,
    pub offset: i64,
    /// The key, lossily decoded; empty for a null key too (see `null_key`).
    pub key: String,
    pub null_key: bool,
    pub seq: Option<u64>,
    pub parked: bool,
    pub order_exception: bool,
    pub park_time: Duration,
    pub unordered: bool,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What all consumers of a test delivered, appended under one lock by the handlers.
#[derive(Clone, Default)]
pub struct SeenLog(pub Arc<Mutex<Vec<Seen>>>);

impl SeenLog {
    pub fn push(&self, consumer: &str, r: &DeliveredRecord) {
        self.0.lock().unwrap().push(Seen {
            consumer: consumer.to_owned(),
            partition: r.partition,
            offset: r.offset,
            key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
            null_key: r.key.is_none(),
            seq: r.probe.as_ref().map(|p| p.seq),
            parked: r.parked,
            order_exception: r.order_exception,
            park_time: r.park_time,
            unordered: r.unordered,
            value: r.value.clone(),
            headers: r.headers.clone(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Distinct (key, seq) pairs processed.
    pub fn distinct(&self) -> usize {
        let log = self.0.lock().unwrap();
        let mut set = std::collections::HashSet::new();
        for s in log.iter() {
            set.insert((s.key.clone(), s.seq));
        }
        set.len()
    }

    /// Replays the global processing order through a from-zero sequence check.
    pub fn check(&self) -> SequenceCheck {
        let mut check = SequenceCheck::default();
        for s in self.0.lock().unwrap().iter() {
            if let Some(seq) = s.seq {
                check.observe(s.key.as_bytes(), seq, true);
            }
        }
        check
    }
}

/// Starts an ordered consumer whose handler logs into `log` and sleeps `service` per record.
pub fn start_consumer(
    broker: &EmbeddedBroker,
    group: &str,
    topic: &str,
    name: &str,
    log: &SeenLog,
    service: Duration,
    configure: impl FnOnce(OrderedConsumerBuilder) -> OrderedConsumerBuilder,
) -> OrderedConsumer {
    let serve = move |_: &DeliveredRecord| {
        if !service.is_zero() {
            std::thread::sleep(service);
        }
    };
    start_consumer_with(broker, group, topic, name, log, serve, configure)
}

/// Starts an ordered consumer whose handler runs `serve` on each record, then logs it into
/// `log`.
pub fn start_consumer_with(
    broker: &EmbeddedBroker,
    group: &str,
    topic: &str,
    name: &str,
    log: &SeenLog,
    mut serve: impl FnMut(&DeliveredRecord) + Send + 'static,
    configure: impl FnOnce(OrderedConsumerBuilder) -> OrderedConsumerBuilder,
) -> OrderedConsumer {
    let log = log.clone();
    let id = name.to_owned();
    // A rebalance waits at most this long for members to rejoin (it is the rebalance
    // timeout members send); it must be at least the session timeout.
    let settings = broker
        .client_settings()
        .client_id(name)
        .parse_properties(["max.poll.interval.ms=10000"])
        .unwrap();
    let builder = OrderedConsumerBuilder::new(&settings, group, topic)
        // Long enough that a loaded CI machine does not drop members by accident; the crash test
        // shortens it for its victim.
        .session_timeout(Duration::from_secs(10))
        .thread_name(name);
    configure(builder)
        .spawn(move |r: &DeliveredRecord| {
            serve(r);
            log.push(&id, r);
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("ordered consumer starts")
}

/// A latch test handlers wait at: [`Hold::wait`] blocks while it is held, [`Hold::release`]
/// lets every waiter through. Waits are bounded by [`PATIENCE`] and the guard of
/// [`Hold::release_on_drop`] releases it, so a failing test cannot hang in a handler.
#[derive(Clone)]
pub struct Hold(Arc<AtomicBool>);

impl Hold {
    /// A latch that starts held.
    pub fn held() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// Blocks while the latch is held (at most [`PATIENCE`]).
    pub fn wait(&self) {
        let since = Instant::now();
        while self.0.load(Ordering::SeqCst) && since.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn release(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// A guard that releases the latch when dropped (also when the test panics).
    pub fn release_on_drop(&self) -> impl Drop {
        struct Release(Hold);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        Release(self.clone())
    }
}

/// A fenced producer for tests: plain rdkafka plus the core's `Migrator`. Records carry probe
/// values with per-key sequence numbers from 0.
pub struct FencedProducer {
    pub producer: FutureProducer,
    pub migrator: Migrator,
    pub topic: String,
    seq: HashMap<String, u64>,
    pending: Vec<DeliveryFuture>,
    pub fences: Vec<(String, u32, i64)>,
}

impl FencedProducer {
    pub fn new(broker: &EmbeddedBroker, topic: &str, partitions: u32) -> Self {
        let producer: FutureProducer = broker
            .client_settings()
            .client_id("fenced-test-producer")
            .producer_config()
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        Self {
            producer,
            migrator: Migrator::new(partitions, Hasher::Murmur2).unwrap(),
            topic: topic.to_owned(),
            seq: HashMap::new(),
            pending: Vec::new(),
            fences: Vec::new(),
        }
    }

    /// Sends the next record of `key` to `partition` (fencing first if the key moves there).
    pub fn send_to(&mut self, key: &str, partition: u32) {
        let seq = {
            let s = self.seq.entry(key.to_owned()).or_insert(0);
            *s += 1;
            *s - 1
        };
        let value = Probe {
            seq,
            sent_us: now_us(),
            body: format!("{key} message body"),
        }
        .encode();
        loop {
            match self.migrator.on_record(key.as_bytes(), partition) {
                Step::Send { partition, header } => {
                    let mut headers = OwnedHeaders::new();
                    let encoded = header.map(|h| h.encode());
                    if let Some(h) = &encoded {
                        headers = headers.insert(Header {
                            key: ROUTE_HEADER,
                            value: Some(h.as_slice()),
                        });
                    }
                    let record = FutureRecord::to(&self.topic)
                        .partition(partition as i32)
                        .key(key)
                        .payload(&value)
                        .headers(headers);
                    let f = self
                        .producer
                        .send_result(record)
                        .unwrap_or_else(|(e, _)| panic!("enqueue failed: {e}"));
                    self.pending.push(f);
                    return;
                }
                Step::Fence {
                    key: k,
                    fence_partition,
                    header,
                    route,
                } => {
                    let fence = header.encode();
                    let route = route.map(|r| r.encode());
                    let mut headers = OwnedHeaders::new().insert(Header {
                        key: FENCE_HEADER,
                        value: Some(fence.as_slice()),
                    });
                    if let Some(r) = &route {
                        headers = headers.insert(Header {
                            key: ROUTE_HEADER,
                            value: Some(r.as_slice()),
                        });
                    }
                    let record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                        .partition(fence_partition as i32)
                        .key(&k[..])
                        .payload(FENCE_VALUE.as_slice())
                        .headers(headers);
                    let f = self
                        .producer
                        .send_result(record)
                        .unwrap_or_else(|(e, _)| panic!("enqueue fence failed: {e}"));
                    let delivered = futures_executor::block_on(f)
                        .expect("producer alive")
                        .unwrap_or_else(|(e, _)| panic!("fence not delivered: {e}"));
                    assert!(self.migrator.fence_acked(&k, delivered.offset));
                    self.fences
                        .push((key.to_owned(), fence_partition, delivered.offset));
                }
                Step::Hold => unreachable!("fences are awaited synchronously"),
            }
        }
    }

    /// Sends the next record of `key` to the partition of its current set.
    pub fn send(&mut self, key: &str) {
        let p = self.migrator.current(key.as_bytes());
        self.send_to(key, p);
    }

    /// Records sent per key so far.
    pub fn sent(&self) -> usize {
        self.seq.values().sum::<u64>() as usize
    }

    /// Waits for every delivery report.
    pub fn flush(&mut self) {
        for f in self.pending.drain(..) {
            futures_executor::block_on(f)
                .expect("producer alive")
                .unwrap_or_else(|(e, _)| panic!("record not delivered: {e}"));
        }
    }
}
