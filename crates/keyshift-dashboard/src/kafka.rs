//! The Kafka side of the dashboard: two background threads, because rdkafka's calls block and
//! a broker outage must not stall the page or the scrapes.
//!
//! - The offsets thread reads, every interval, the topic's end offsets ([`Admin::end_offsets`];
//!   their growth is each partition's produce rate) and, for the `--group`s given, the lag of
//!   each partition with `keyshift lag`'s collector and rules ([`LagCollector`]). The latest
//!   [`KafkaReading`] replaces the previous one; a failed read carries the error text, which
//!   `/healthz` and the page show.
//! - The fence thread tails every partition of the topic from its end, without joining a group,
//!   and keeps the fence records it sees ([`keyshift_core::protocol::is_fence`]: the
//!   `keyshift-fence` header or the reserved value). A fence sits on the key's old partition
//!   and names the new one, so each is one move of the migrations timeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyshift_core::protocol::epoch::EPOCH_KEY;
use keyshift_core::protocol::{is_fence, FenceHeader, FENCE_HEADER};
use keyshift_kafka::lag::{GroupLag, LagCollector, LagCollectorConfig};
use keyshift_kafka::{Admin, AdminConfig, ClientSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// One reading of the offsets thread.
#[derive(Debug, Clone)]
pub struct KafkaReading {
    /// When it was taken (Unix seconds).
    pub at: f64,
    /// End offset of each partition, or why they could not be read.
    pub end_offsets: Result<Vec<i64>, String>,
    /// Lag of the requested groups (empty without `--group`), or why it could not be read.
    pub groups: Result<Vec<GroupLag>, String>,
}

/// One fence record: a key moved from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct FenceEvent {
    /// The record's timestamp (Unix seconds), or when it was read if it has none.
    pub at: f64,
    /// The key, lossy UTF-8.
    pub key: String,
    /// The partition the fence was written on (the key's old partition).
    pub from: u32,
    /// The partition the key moved to; `None` if the header did not decode.
    pub to: Option<u32>,
    /// The message set the key moved into (counts its moves).
    pub set_index: Option<u32>,
    /// Offset of the fence on `from`.
    pub offset: i64,
}

/// What the dashboard needs to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Client settings (bootstrap servers, client id, `-X` properties).
    pub settings: ClientSettings,
    /// The topic shown.
    pub topic: String,
    /// Consumer groups whose lag is shown.
    pub groups: Vec<String>,
    /// Time between readings.
    pub interval: Duration,
    /// Upper bound of each request.
    pub timeout: Duration,
    /// Whether to tail the topic for fence records.
    pub tail_fences: bool,
    /// How far back the fence tail starts (the history window), so that moves made shortly
    /// before the dashboard started are on the timeline and none is missed at start-up.
    pub fence_lookback: Duration,
}

/// Handles to the background threads and what they produce. Dropping it stops them.
#[derive(Debug)]
pub struct KafkaSide {
    latest: Arc<Mutex<Option<KafkaReading>>>,
    fences: Arc<Mutex<Vec<FenceEvent>>>,
    fence_error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still a whole value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps until `until` in short steps, returning early once `stop` is set.
fn sleep_until(until: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

impl KafkaSide {
    /// Creates the clients and starts the threads. Fails only on a bad client configuration;
    /// an unreachable cluster is reported in the readings.
    pub fn start(options: KafkaOptions) -> Result<Self, String> {
        let admin = Admin::with_config(
            &options.settings,
            AdminConfig {
                timeout: options.timeout,
                ..AdminConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let collector = if options.groups.is_empty() {
            None
        } else {
            Some(
                LagCollector::with_config(
                    &options.settings,
                    LagCollectorConfig {
                        timeout: options.timeout,
                        probe_timeout: options.timeout.min(options.interval),
                        ..LagCollectorConfig::default()
                    },
                )
                .map_err(|e| e.to_string())?,
            )
        };
        let latest: Arc<Mutex<Option<KafkaReading>>> = Arc::default();
        let fences: Arc<Mutex<Vec<FenceEvent>>> = Arc::default();
        let fence_error: Arc<Mutex<Option<String>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let mut threads = Vec::new();
        {
            let (latest, stop, options) = (Arc::clone(&latest), Arc::clone(&stop), options.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("dashboard-offsets".into())
                    .spawn(move || offsets_loop(admin, collector, options, latest, stop))
                    .map_err(|e| format!("cannot start the offsets thread: {e}"))?,
            );
        }
        if options.tail_fences {
            let (fences, error, stop) = (
                Arc::clone(&fences),
                Arc::clone(&fence_error),
                Arc::clone(&stop),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("dashboard-fences".into())
                    .spawn(move || fence_loop(options, fences, error, stop))
                    .map_err(|e| format!("cannot start the fence thread: {e}"))?,
            );
        }
        Ok(KafkaSide {
            latest,
            fences,
            fence_error,
            stop,
            threads,
        })
    }

    /// The latest reading, if any was taken yet.
    pub fn latest(&self) -> Option<KafkaReading> {
        lock(&self.latest).clone()
    }

    /// The fences read since the last call.
    pub fn take_fences(&self) -> Vec<FenceEvent> {
        std::mem::take(&mut *lock(&self.fences))
    }

    /// Why the fence tail is not reading, if it is not.
    pub fn fence_error(&self) -> Option<String> {
        lock(&self.fence_error).clone()
    }
}

impl Drop for KafkaSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn offsets_loop(
    admin: Admin,
    mut collector: Option<LagCollector>,
    options: KafkaOptions,
    latest: Arc<Mutex<Option<KafkaReading>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        let end_offsets = admin.end_offsets(&options.topic).map_err(|e| e.to_string());
        let groups = match &mut collector {
            None => Ok(Vec::new()),
            Some(c) => c
                .collect(&options.groups, SystemTime::now())
                .map_err(|e| e.to_string()),
        };
        *lock(&latest) = Some(KafkaReading {
            at: unix(SystemTime::now()),
            end_offsets,
            groups,
        });
        sleep_until(started + options.interval, &stop);
    }
}

/// Tails the topic for fences; (re)subscribes whenever the partition count is unknown or
/// changes, so a broker that comes up late, or a topic that grows, is picked up.
fn fence_loop(
    options: KafkaOptions,
    fences: Arc<Mutex<Vec<FenceEvent>>>,
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut config = options
        .settings
        .consumer_config("keyshift-dashboard-fences");
    config
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false");
    for p in options.settings.passthrough() {
        config.set(p.key(), p.value());
    }
    let consumer: BaseConsumer = match config.create() {
        Ok(c) => c,
        Err(e) => {
            *lock(&error) = Some(format!("cannot create the fence consumer: {e}"));
            return;
        }
    };
    let mut assigned = 0usize;
    let mut checked = Instant::now() - Duration::from_secs(3600);
    while !stop.load(Ordering::Acquire) {
        if checked.elapsed() >= Duration::from_secs(10) || assigned == 0 {
            checked = Instant::now();
            match consumer.fetch_metadata(Some(&options.topic), options.timeout) {
                Ok(md) => {
                    let n = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == options.topic)
                        .map_or(0, |t| t.partitions().len());
                    if n == 0 {
                        *lock(&error) = Some(format!("topic '{}' not found", options.topic));
                    } else if n != assigned {
                        let since = SystemTime::now()
                            .checked_sub(options.fence_lookback)
                            .unwrap_or(UNIX_EPOCH);
                        let since_ms = since
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as i64;
                        let mut by_time = TopicPartitionList::new();
                        for p in assigned..n {
                            let _ = by_time.add_partition_offset(
                                &options.topic,
                                p as i32,
                                Offset::Offset(since_ms),
                            );
                        }
                        // The first offset at or after `since` (the end where there is none).
                        let tpl = match consumer.offsets_for_times(by_time, options.timeout) {
                            Ok(tpl) => tpl,
                            Err(e) => {
                                *lock(&error) = Some(format!("looking up fence offsets: {e}"));
                                sleep_until(Instant::now() + options.interval, &stop);
                                continue;
                            }
                        };
                        // Partitions already tailed keep their position.
                        let result = if assigned == 0 {
                            consumer.assign(&tpl)
                        } else {
                            consumer.incremental_assign(&tpl)
                        };
                        match result {
                            Ok(()) => {
                                assigned = n;
                                *lock(&error) = None;
                            }
                            Err(e) => *lock(&error) = Some(format!("cannot tail the topic: {e}")),
                        }
                    }
                }
                Err(e) => *lock(&error) = Some(format!("reading metadata for fences: {e}")),
            }
            if assigned == 0 {
                sleep_until(Instant::now() + options.interval, &stop);
                continue;
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => tracing::debug!(error = %e, "fence tail"),
            Some(Ok(m)) => {
                let header = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == FENCE_HEADER)
                        .map(|h| h.value.unwrap_or_default().to_vec())
                });
                // A growth's epoch fences close every key homed on a partition, not one key's
                // set: they are no move.
                if !is_fence(header.is_some(), m.payload()) || m.key() == Some(EPOCH_KEY) {
                    continue;
                }
                let decoded = header.as_deref().and_then(|v| FenceHeader::decode(v).ok());
                let at = m
                    .timestamp()
                    .to_millis()
                    .map_or_else(|| unix(SystemTime::now()), |ms| ms as f64 / 1e3);
                lock(&fences).push(FenceEvent {
                    at,
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    from: m.partition().max(0) as u32,
                    to: decoded.map(|d| d.to_partition),
                    set_index: decoded.map(|d| d.set_index),
                    offset: m.offset(),
                });
            }
        }
    }
}
