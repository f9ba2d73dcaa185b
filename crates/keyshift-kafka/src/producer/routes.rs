//! The route topic: where a producer with durable routes records every route change, and what
//! a starting producer reads back before it sends anything.
//!
//! [`RouteTopic::open`] creates the topic if needed (compacted, one partition; an existing
//! topic is used as it is), reads every partition from the beginning to the end offsets it saw
//! at start, keeps the last value per key (a tombstone removes the key), and returns the live
//! entries for [`keyshift_core::protocol::Migrator::restore`]. Correctness does not depend on
//! compaction: it only keeps the topic small; the reader keeps the last value per key whatever
//! the log still holds. Every failure is an error naming the topic: a producer that cannot read
//! its routes must not start routing by hash, which would send moved keys home without a fence.
//!
//! Writes ([`RouteTopic::record`]) go through the producer's own idempotent client to the
//! partition of the key's murmur2 hash, so all changes of one key are in one partition in the
//! order they were written. The engine decides when to write and what waits for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keyshift_core::hash::kafka_partition;
use keyshift_core::protocol::epoch::{Epoch, EPOCH_KEY};
use keyshift_core::protocol::RouteEntry;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

use super::error::ProducerBuildError;
use crate::admin::{Admin, AdminError};
use crate::config::ClientSettings;
use crate::reader::state_reader;

/// Suffix of the default route topic name: `<topic>.keyshift-routes`.
pub const ROUTE_TOPIC_SUFFIX: &str = ".keyshift-routes";

/// Where a producer keeps the routes of moved keys; see [`super::ProducerBuilder::routes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routes {
    /// Recorded in a compacted topic (`None`: `<topic>.keyshift-routes`) before a moved key's
    /// new records are sent, and restored at start. For one producer process per topic only:
    /// it moves keys on its own. Refused while coordinated producers have moved keys of the
    /// topic.
    Durable(Option<String>),
    /// In memory only: a restarted producer forgets which keys it moved and sends them home
    /// without a fence while their older records may be unprocessed — per-key order can break
    /// across restarts. For throwaway runs and for comparison.
    Ephemeral,
    /// Shared by every producer of the topic through the control log (`None`:
    /// `<topic>.keyshift-control`): one member decides moves and all members follow them;
    /// routes are the log's commits, so restarts keep them too. The default: a lone producer
    /// is a group of one, and any instance started beside it joins without a setting. Routes a
    /// durable producer left in `<topic>.keyshift-routes` are continued. See `docs/routing.md`.
    Coordinated(Option<String>),
}

impl Default for Routes {
    fn default() -> Self {
        Routes::Coordinated(None)
    }
}

/// The route topic of one producer.
#[derive(Debug, Clone)]
pub(super) struct RouteTopic {
    pub name: String,
    partitions: u32,
}

/// The route state read at start: the last value of every key still routed.
pub(super) type Restored = Vec<(Box<[u8]>, RouteEntry)>;

/// The route state read at start, with the epoch of the last growth if the topic grew.
pub(super) type Read = (Restored, Option<Epoch>);

impl RouteTopic {
    /// Creates (if missing) and reads the route topic `name`; see the module docs.
    pub fn open(
        settings: &ClientSettings,
        name: String,
        timeout: Duration,
    ) -> Result<(Self, Restored, Option<Epoch>), ProducerBuildError> {
        let err = |reason: String| ProducerBuildError::RouteState {
            topic: name.clone(),
            reason,
        };
        let admin = Admin::new(settings).map_err(|e| err(e.to_string()))?;
        let created = admin.create_topic_with(&name, 1, &[("cleanup.policy", "compact")]);
        let partitions = match created {
            Ok(_) => 1,
            // Someone made it with another layout: read and write it as it is.
            Err(AdminError::PartitionMismatch { existing, .. }) => existing,
            Err(e) => return Err(err(format!("cannot create it: {e}"))),
        };
        Self::read_whole(settings, &admin, name.clone(), partitions, timeout)
            .map(|(topic, (restored, epoch))| (topic, restored, epoch))
            .map_err(err)
    }

    /// Reads the route topic `name` if it exists, without creating it: what coordinated
    /// producers take over from durable ones, with the epoch if the topic grew (`None` when
    /// there is no such topic).
    pub fn read_existing(
        settings: &ClientSettings,
        name: String,
        timeout: Duration,
    ) -> Result<Option<Read>, ProducerBuildError> {
        let err = |reason: String| ProducerBuildError::RouteState {
            topic: name.clone(),
            reason,
        };
        let admin = Admin::new(settings).map_err(|e| err(e.to_string()))?;
        let partitions = match admin.partitions(&name) {
            Ok(n) => n,
            Err(AdminError::UnknownTopic { .. }) => return Ok(None),
            Err(e) => return Err(err(format!("cannot tell whether it exists: {e}"))),
        };
        let (_, read) =
            Self::read_whole(settings, &admin, name.clone(), partitions, timeout).map_err(err)?;
        Ok(Some(read))
    }

    /// The topic `name` of `partitions`, read from the beginning to its current end.
    fn read_whole(
        settings: &ClientSettings,
        admin: &Admin,
        name: String,
        partitions: u32,
        timeout: Duration,
    ) -> Result<(Self, Read), String> {
        let ends = admin
            .end_offsets(&name)
            .map_err(|e| format!("cannot read its end offsets: {e}"))?;
        let topic = RouteTopic { name, partitions };
        let restored = topic.read(settings, &ends, timeout)?;
        Ok((topic, restored))
    }

    /// Reads every partition from the beginning up to `ends`; the last value per key wins.
    fn read(
        &self,
        settings: &ClientSettings,
        ends: &[i64],
        timeout: Duration,
    ) -> Result<Read, String> {
        let consumer = state_reader(
            settings,
            "keyshift-routes-reader",
            &self.name,
            (0..ends.len() as i32).map(|p| (p, Offset::Beginning)),
            true,
        )?;
        let mut todo: Vec<bool> = ends.iter().map(|&end| end > 0).collect();
        let mut last: HashMap<Box<[u8]>, Option<RouteEntry>> = HashMap::new();
        let mut epoch = None;
        let deadline = Instant::now() + timeout;
        let mut read = 0u64;
        while todo.iter().any(|&t| t) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "read {read} record(s) but not up to the end offsets {ends:?} within \
                     {timeout:?}"
                ));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = match message {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(t) = todo.get_mut(p as usize) {
                        *t = false;
                    }
                    continue;
                }
                Err(e) => return Err(format!("cannot read it: {e}")),
            };
            let p = message.partition() as usize;
            let offset = message.offset();
            if offset + 1 >= ends.get(p).copied().unwrap_or(0) {
                if let Some(t) = todo.get_mut(p) {
                    *t = false;
                }
            }
            let Some(key) = message.key() else {
                return Err(format!(
                    "record at partition {p} offset {offset} has no key (expected the user key)"
                ));
            };
            if key == EPOCH_KEY {
                // The last growth (see `growth.rs`); a later one replaces it.
                let value = message.payload().unwrap_or_default();
                epoch =
                    Some(Epoch::decode(value).map_err(|e| {
                        format!("epoch record at partition {p} offset {offset}: {e}")
                    })?);
                read += 1;
                continue;
            }
            let entry = match message.payload() {
                None => None,
                Some(value) => Some(RouteEntry::decode(value).map_err(|e| {
                    format!(
                        "record of key '{}' at partition {p} offset {offset}: {e}",
                        String::from_utf8_lossy(key)
                    )
                })?),
            };
            read += 1;
            last.insert(key.into(), entry);
        }
        let restored: Restored = last
            .into_iter()
            .filter_map(|(key, entry)| entry.map(|e| (key, e)))
            .collect();
        tracing::info!(
            topic = %self.name,
            records = read,
            routed_keys = restored.len(),
            epoch = epoch.as_ref().map(|e| e.number),
            "route state read"
        );
        Ok((restored, epoch))
    }

    /// The record that writes one route change: the key's new set, or a tombstone.
    pub fn record<'a>(
        &'a self,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    ) -> FutureRecord<'a, [u8], [u8]> {
        let partition = kafka_partition(key, self.partitions) as i32;
        let record = FutureRecord::to(&self.name).partition(partition).key(key);
        match value {
            Some(value) => record.payload(value),
            None => record,
        }
    }
}
