//! The control topic on Kafka: where coordinated producers write and read the control log
//! ([`keyshift_core::protocol::control`]; design in `docs/routing.md`, "Many producers").
//!
//! [`ControlTopic::open`] creates the topic if it is missing — one partition, because the log's
//! meaning is its order, and `cleanup.policy=compact`, because the log keys are chosen so that
//! a compacted log reads like the full one — and replays it from the beginning to the end offset
//! it saw, applying every record to a fresh [`ControlLog`]. An existing topic with more than one
//! partition is refused: its records would have no single order. Writes go through an
//! idempotent producer of the topic's own (one partition, `acks=all`), keyed by
//! [`Control::log_key`]; [`ControlTopic::write`] answers the record's offset.
//! [`ControlTopic::tail`] follows the log from an offset on a thread of its own and hands every
//! record with its effect to a callback, in log order.
//!
//! A value that does not decode (another program wrote to the topic, or a newer version) is
//! skipped with a warning and counted: skipping is the same decision for every reader, so the
//! members still agree, and no rule depends on a record it cannot read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyshift_core::protocol::control::{member_of_key, Control, ControlLog, Effect, MemberId};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;

use crate::admin::{Admin, AdminError};
use crate::config::ClientSettings;
use crate::reader::state_reader;

/// Suffix of the default control topic name: `<topic>.keyshift-control`.
pub const CONTROL_TOPIC_SUFFIX: &str = ".keyshift-control";

/// How long a tail's poll waits for a record before looking at its stop flag.
const TAIL_POLL: Duration = Duration::from_millis(50);

/// A control topic that cannot be used; every variant names the topic.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// It could not be created, described or read.
    #[error("control topic '{topic}': {reason}")]
    Unusable {
        /// The control topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// A write was not acknowledged.
    #[error("control topic '{topic}': write of {log_key} failed: {cause}")]
    Write {
        /// The control topic.
        topic: String,
        /// The record's log key.
        log_key: String,
        /// rdkafka's error.
        cause: Box<KafkaError>,
    },
}

/// One producer's handle on the control topic; see the module docs.
pub struct ControlTopic {
    name: String,
    settings: ClientSettings,
    producer: FutureProducer,
    /// Values that did not decode, skipped so far (replay and tails).
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for ControlTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTopic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The log as replayed at open: the state and the offset the next record will have.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Every record up to the end offset, applied.
    pub log: ControlLog,
    /// Offset to tail from.
    pub next_offset: i64,
    /// Members whose heartbeat is the last word of them in the log (neither a leave nor a
    /// tombstone followed), in id order: a member starting from this log accounts for them as
    /// if just heard (`Coordinator::from_log`), since one of them may only be stopped.
    pub members: Vec<MemberId>,
}

impl ControlTopic {
    /// Creates (if missing) and replays the control topic `name`; see the module docs.
    pub fn open(
        settings: &ClientSettings,
        name: &str,
        timeout: Duration,
    ) -> Result<(Self, Replayed), ControlError> {
        Self::open_seeded(settings, name, timeout, ControlLog::new())
    }

    /// [`ControlTopic::open`], replaying the log onto `seed` instead of an empty state (routes
    /// made before the log began: [`ControlLog::with_routes`]).
    pub fn open_seeded(
        settings: &ClientSettings,
        name: &str,
        timeout: Duration,
        seed: ControlLog,
    ) -> Result<(Self, Replayed), ControlError> {
        let err = |reason: String| ControlError::Unusable {
            topic: name.to_owned(),
            reason,
        };
        let admin = Admin::new(settings).map_err(|e| err(e.to_string()))?;
        match admin.create_topic_with(name, 1, &[("cleanup.policy", "compact")]) {
            Ok(_) => {}
            Err(AdminError::PartitionMismatch { existing, .. }) => {
                return Err(err(format!(
                    "it has {existing} partitions; the control log needs exactly 1 (its meaning \
                     is its order)"
                )))
            }
            Err(e) => return Err(err(format!("cannot create it: {e}"))),
        }
        let end = admin
            .end_offsets(name)
            .map_err(|e| err(format!("cannot read its end offset: {e}")))?
            .first()
            .copied()
            .unwrap_or(0);
        let mut config = settings.producer_config();
        // Control records are few and every one is on a moved key's critical path: send each
        // at once rather than wait to batch it.
        config.set("linger.ms", "0");
        let producer: FutureProducer = config
            .create()
            .map_err(|e| err(format!("cannot create its writer: {e}")))?;
        let topic = ControlTopic {
            name: name.to_owned(),
            settings: settings.clone(),
            producer,
            skipped: Arc::new(AtomicU64::new(0)),
        };
        let (log, members) =
            replay(settings, name, &topic.skipped, end, timeout, seed).map_err(err)?;
        tracing::info!(topic = name, records = end, term = log.term(), decider = ?log.decider(), "control log replayed");
        Ok((
            topic,
            Replayed {
                log,
                next_offset: end,
                members,
            },
        ))
    }

    /// Replays the control topic `name` if it exists, without creating it or a writer: what
    /// a producer with other routes checks so that it does not ignore coordinated moves
    /// (`None` when there is no such topic).
    pub fn replay_existing(
        settings: &ClientSettings,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<ControlLog>, ControlError> {
        let err = |reason: String| ControlError::Unusable {
            topic: name.to_owned(),
            reason,
        };
        let admin = Admin::new(settings).map_err(|e| err(e.to_string()))?;
        let end = match admin.end_offsets(name) {
            Ok(ends) => ends.first().copied().unwrap_or(0),
            Err(AdminError::UnknownTopic { .. }) => return Ok(None),
            Err(e) => return Err(err(format!("cannot read its end offset: {e}"))),
        };
        let skipped = AtomicU64::new(0);
        replay(settings, name, &skipped, end, timeout, ControlLog::new())
            .map(|(log, _)| log)
            .map(Some)
            .map_err(err)
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values skipped because they did not decode.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Writes `record` and answers its offset once it is acknowledged.
    pub async fn write(&self, record: &Control) -> Result<i64, ControlError> {
        let key = record.log_key();
        let value = record.encode();
        self.send(&key, Some(&value)).await
    }

    /// Hands `record` to the writer without waiting for its acknowledgement (for callers that
    /// cannot await and learn of the write by reading the log back).
    pub fn enqueue(&self, record: &Control) -> Result<(), ControlError> {
        let key = record.log_key();
        let value = record.encode();
        let rec = FutureRecord::<str, [u8]>::to(&self.name)
            .partition(0)
            .key(&key)
            .payload(&value);
        // Dropping the delivery future does not cancel the delivery.
        self.producer
            .send_result(rec)
            .map(drop)
            .map_err(|(e, _)| ControlError::Write {
                topic: self.name.clone(),
                log_key: key.clone(),
                cause: Box::new(e),
            })
    }

    /// Writes a tombstone for `log_key` (compaction then removes the record it names).
    pub async fn tombstone(&self, log_key: &str) -> Result<i64, ControlError> {
        self.send(log_key, None).await
    }

    async fn send(&self, key: &str, value: Option<&[u8]>) -> Result<i64, ControlError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.name)
            .partition(0)
            .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let failed = |cause: KafkaError| ControlError::Write {
            topic: self.name.clone(),
            log_key: key.to_owned(),
            cause: Box::new(cause),
        };
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| failed(e))?
            .await
            .map_err(|_| failed(KafkaError::Canceled))?;
        delivery.map(|d| d.offset).map_err(|(e, _)| failed(e))
    }

    /// Follows the log from `replayed` on a thread: every record at or after its
    /// `next_offset` is applied to its state and handed, with its offset and effect, to
    /// `on_record`, in log order. Dropping the [`ControlTail`] stops the thread.
    pub fn tail(
        &self,
        replayed: Replayed,
        mut on_record: impl FnMut(i64, &Control, &Effect) + Send + 'static,
    ) -> Result<ControlTail, ControlError> {
        let err = |reason: String| ControlError::Unusable {
            topic: self.name.clone(),
            reason,
        };
        let consumer = self
            .reader(Offset::Offset(replayed.next_offset), false)
            .map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (name, skipped) = (self.name.clone(), Arc::clone(&self.skipped));
        let mut log = replayed.log;
        let thread = std::thread::Builder::new()
            .name("keyshift-control".into())
            .spawn(move || {
                let mut failing = false;
                while !stopped.load(Ordering::Relaxed) {
                    match consumer.poll(TAIL_POLL) {
                        None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => {
                            // librdkafka retries by itself; say so once per outage.
                            if !failing {
                                tracing::warn!(topic = %name, %e, "reading the control log failed; retrying");
                                failing = true;
                            }
                        }
                        Some(Ok(m)) => {
                            failing = false;
                            if let Some(record) = decode(&name, &skipped, &m) {
                                let effect = log.apply(&record);
                                on_record(m.offset(), &record, &effect);
                            } else if m.payload().is_none() {
                                if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                                    log.forget(key);
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| err(format!("cannot start its reader thread: {e}")))?;
        Ok(ControlTail {
            stop,
            thread: Some(thread),
        })
    }

    /// A reader of the topic's partition from `from`.
    fn reader(&self, from: Offset, eof: bool) -> Result<BaseConsumer, String> {
        state_reader(
            &self.settings,
            "keyshift-control-reader",
            &self.name,
            [(0, from)],
            eof,
        )
    }
}

/// Applies the records of `name` from the beginning up to `end` to `log`; answers it and the
/// members the log still names (see [`Replayed::members`]).
fn replay(
    settings: &ClientSettings,
    name: &str,
    skipped: &AtomicU64,
    end: i64,
    timeout: Duration,
    mut log: ControlLog,
) -> Result<(ControlLog, Vec<MemberId>), String> {
    let mut members = std::collections::BTreeSet::new();
    if end <= 0 {
        return Ok((log, Vec::new()));
    }
    let consumer = state_reader(
        settings,
        "keyshift-control-reader",
        name,
        [(0, Offset::Beginning)],
        true,
    )?;
    let deadline = Instant::now() + timeout;
    let mut next = 0;
    while next < end {
        if Instant::now() >= deadline {
            return Err(format!(
                "read up to offset {next} but not to the end offset {end} within {timeout:?}"
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(format!("cannot read it: {e}")),
            Some(Ok(m)) => {
                next = m.offset() + 1;
                match decode(name, skipped, &m) {
                    Some(record) => {
                        match &record {
                            Control::Heartbeat { member, .. } => members.insert(*member),
                            Control::Leave { member } => members.remove(member),
                            _ => false,
                        };
                        log.apply(&record);
                    }
                    None if m.payload().is_none() => {
                        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                            continue;
                        };
                        // A tombstone of a member's key: a decider forgot the member.
                        if let Some(member) = member_of_key(key) {
                            members.remove(&member);
                        }
                        log.forget(key);
                    }
                    None => {}
                }
            }
        }
    }
    Ok((log, members.into_iter().collect()))
}

/// The record's control value, or `None` for a tombstone or a value that does not decode
/// (counted and logged).
fn decode(topic: &str, skipped: &AtomicU64, m: &BorrowedMessage<'_>) -> Option<Control> {
    let value = m.payload()?;
    match Control::decode(value) {
        Ok(record) => Some(record),
        Err(e) => {
            skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic, offset = m.offset(), %e, "control record skipped");
            None
        }
    }
}

/// A thread following the control log; dropping it stops the thread.
#[derive(Debug)]
pub struct ControlTail {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ControlTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The last owner may be dropped by the callback, on the tail's own thread: it
            // stops by itself at its next poll, and joining it there would wait forever.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
