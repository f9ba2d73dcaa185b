//! Topic administration and offset queries: the few broker facts keyshift needs.
//!
//! [`Admin`] wraps one rdkafka admin client plus, per consumer group asked about, one
//! group-configured consumer that never joins the group. It answers:
//! - [`Admin::create_topic`]: idempotent topic creation (same partition count = success);
//! - [`Admin::partitions`]: a topic's partition count, from metadata;
//! - [`Admin::end_offsets`]: high watermarks (ListOffsets latest), i.e. the offset the next
//!   record of each partition will get — the producer-side half of lag;
//! - [`Admin::committed_offsets`]: a group's committed offsets (OffsetFetch) for any
//!   partitions, including ones the caller does not own. This is the barrier check of fenced
//!   migration: a consumer on partition B asks whether the group has committed past the fence
//!   on partition A, which another member may own.
//!
//! All calls are blocking (librdkafka's metadata and offset calls are synchronous) and bounded
//! by the admin's timeout. From async code call them through `tokio::task::spawn_blocking`;
//! [`Admin`] is a cheap clone for that purpose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use crate::watermarks::{self, TopicPartition};

/// The `group.id` of the never-joining client that reads end offsets (ListOffsets needs no
/// group; the client is cached with the per-group ones).
const OFFSETS_CLIENT_GROUP: &str = "keyshift-admin-offsets";

use crate::config::ClientSettings;

/// How long one admin call may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval between metadata polls while waiting for a new topic to become visible.
const TOPIC_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Outcome of an idempotent [`Admin::create_topic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    /// The topic did not exist and was created.
    Created,
    /// The topic already existed with the requested partition count.
    AlreadyExists,
}

/// Options of an [`Admin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Upper bound for each call (create, metadata, offset queries).
    pub timeout: Duration,
    /// Replication factor of created topics; `None` lets the broker choose
    /// (`default.replication.factor` on Apache Kafka).
    pub replication_factor: Option<u16>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            timeout: DEFAULT_TIMEOUT,
            replication_factor: None,
        }
    }
}

/// A failed admin call; every variant names the topic or group it was about.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker refused to add partitions (CreatePartitions), or does not implement it.
    #[error("cannot add partitions to topic '{topic}' (to {partitions}): {reason}")]
    CreatePartitions {
        /// The topic.
        topic: String,
        /// The partition count asked for.
        partitions: u32,
        /// The broker's or the client's reason.
        reason: String,
    },
    /// The rdkafka client could not be created (usually a bad passthrough property).
    #[error("cannot create a Kafka client for '{bootstrap}': {source}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// rdkafka's error.
        source: Box<KafkaError>,
    },
    /// A partition count of zero, or one larger than Kafka allows.
    #[error("invalid partition count {partitions} for topic '{topic}': expected 1..=2147483647")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// The count asked for.
        partitions: u32,
    },
    /// The topic exists with a different partition count.
    #[error(
        "topic '{topic}' already exists with {existing} partitions, not the {requested} \
         requested; use another topic name or delete it first"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Its current partition count.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// The broker refused to create the topic.
    #[error("creating topic '{topic}' failed: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The topic does not exist.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// A request to the cluster failed or timed out.
    #[error("{operation} for topic '{topic}' failed: {source}")]
    Request {
        /// What was being done, e.g. "fetching metadata".
        operation: &'static str,
        /// The topic.
        topic: String,
        /// rdkafka's error (`OperationTimedOut` after the admin's timeout).
        source: Box<KafkaError>,
    },
    /// OffsetFetch for a group failed or timed out.
    #[error("reading committed offsets of group '{group}' for topic '{topic}' failed: {source}")]
    Committed {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// rdkafka's error.
        source: Box<KafkaError>,
    },
    /// A created topic did not show up in metadata in time.
    #[error("topic '{topic}' was created but did not appear with {partitions} partitions within {timeout:?}")]
    TopicNotVisible {
        /// The topic.
        topic: String,
        /// The expected partition count.
        partitions: u32,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Topic and offset administration against one cluster; see the [module docs](self).
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    config: AdminConfig,
    client: AdminClient<DefaultClientContext>,
    /// One non-joining consumer per group: OffsetFetch is answered by the group's coordinator,
    /// which librdkafka only talks to from a client configured with that `group.id`.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl Admin {
    /// An admin with [`AdminConfig::default`].
    pub fn new(settings: &ClientSettings) -> Result<Self, AdminError> {
        Self::with_config(settings, AdminConfig::default())
    }

    /// An admin with explicit options.
    pub fn with_config(settings: &ClientSettings, config: AdminConfig) -> Result<Self, AdminError> {
        let mut client_config = settings.admin_config();
        // A metadata request for a missing topic must not create it on brokers that have
        // auto-creation on: `partitions` would then invent topics with the default count.
        client_config.set("allow.auto.create.topics", "false");
        let client = client_config
            .create()
            .map_err(|source| AdminError::Client {
                bootstrap: settings.bootstrap_servers().to_owned(),
                source: Box::new(source),
            })?;
        Ok(Admin {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                config,
                client,
                groups: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this admin was created with.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    /// Creates `topic` with `partitions` partitions, or accepts it if it already exists with
    /// exactly that many; returns once the topic is visible in metadata, so producers and
    /// consumers created afterwards see all partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<TopicStatus, AdminError> {
        self.create_topic_with(topic, partitions, &[])
    }

    /// [`Admin::create_topic`] with topic configuration entries for a topic it creates (e.g.
    /// `cleanup.policy=compact`); an existing topic is accepted as it is configured.
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: u32,
        config: &[(&str, &str)],
    ) -> Result<TopicStatus, AdminError> {
        let count = i32::try_from(partitions)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| AdminError::InvalidPartitions {
                topic: topic.to_owned(),
                partitions,
            })?;
        let replication = self.inner.config.replication_factor.map_or(-1, i32::from);
        let mut new_topic = NewTopic::new(topic, count, TopicReplication::Fixed(replication));
        for (key, value) in config {
            new_topic = new_topic.set(key, value);
        }
        let timeout = self.timeout();
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        // The future is completed by rdkafka's own background thread, so blocking on it here
        // does not need (or disturb) any async runtime.
        let results =
            futures_executor::block_on(self.inner.client.create_topics([&new_topic], &options))
                .map_err(|source| AdminError::Request {
                    operation: "creating the topic",
                    topic: topic.to_owned(),
                    source: Box::new(source),
                })?;
        let status = match results.into_iter().next() {
            Some(Ok(_)) => TopicStatus::Created,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                let existing = self.partitions(topic)?;
                if existing != partitions {
                    return Err(AdminError::PartitionMismatch {
                        topic: topic.to_owned(),
                        existing,
                        requested: partitions,
                    });
                }
                return Ok(TopicStatus::AlreadyExists);
            }
            Some(Err((_, code))) => {
                return Err(AdminError::CreateTopic {
                    topic: topic.to_owned(),
                    code,
                })
            }
            None => {
                return Err(AdminError::Request {
                    operation: "creating the topic",
                    topic: topic.to_owned(),
                    source: Box::new(KafkaError::AdminOpCreation(
                        "no result for the topic".to_owned(),
                    )),
                })
            }
        };
        self.wait_visible(topic, partitions)?;
        Ok(status)
    }

    /// Grows `topic` to `partitions` partitions in all (CreatePartitions) and waits until
    /// metadata shows them. A topic that already has that many is left as it is.
    pub fn create_partitions(&self, topic: &str, partitions: u32) -> Result<(), AdminError> {
        let refused = |reason: String| AdminError::CreatePartitions {
            topic: topic.to_owned(),
            partitions,
            reason,
        };
        if self.partitions(topic)? >= partitions {
            return Ok(());
        }
        let total = usize::try_from(partitions)
            .ok()
            .filter(|&n| n > 0 && n <= i32::MAX as usize)
            .ok_or_else(|| AdminError::InvalidPartitions {
                topic: topic.to_owned(),
                partitions,
            })?;
        let timeout = self.timeout();
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let request = NewPartitions::new(topic, total);
        let results =
            futures_executor::block_on(self.inner.client.create_partitions([&request], &options))
                .map_err(|e| refused(e.to_string()))?;
        match results.into_iter().next() {
            Some(Ok(_)) => {}
            Some(Err((_, code))) => return Err(refused(code.to_string())),
            None => return Err(refused("no result for the topic".into())),
        }
        self.wait_visible(topic, partitions)
    }

    fn wait_visible(&self, topic: &str, partitions: u32) -> Result<(), AdminError> {
        let deadline = Instant::now() + self.timeout();
        loop {
            match self.partitions(topic) {
                Ok(n) if n == partitions => return Ok(()),
                Ok(_) | Err(AdminError::UnknownTopic { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(TOPIC_POLL_INTERVAL);
                }
                Ok(_) | Err(AdminError::UnknownTopic { .. }) => {
                    return Err(AdminError::TopicNotVisible {
                        topic: topic.to_owned(),
                        partitions,
                        timeout: self.timeout(),
                    })
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// The number of partitions of `topic`, from a metadata request.
    pub fn partitions(&self, topic: &str) -> Result<u32, AdminError> {
        let metadata = self
            .inner
            .client
            .inner()
            .fetch_metadata(Some(topic), self.timeout())
            .map_err(|source| AdminError::Request {
                operation: "fetching metadata",
                topic: topic.to_owned(),
                source: Box::new(source),
            })?;
        let unknown = || AdminError::UnknownTopic {
            topic: topic.to_owned(),
        };
        let entry = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(unknown)?;
        match entry.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                return Err(unknown())
            }
            Some(code) => {
                return Err(AdminError::Request {
                    operation: "fetching metadata",
                    topic: topic.to_owned(),
                    source: Box::new(KafkaError::MetadataFetch(code)),
                })
            }
        }
        if entry.partitions().is_empty() {
            return Err(unknown());
        }
        // Partition ids are dense (0..n) in Kafka; the count is what routing needs.
        Ok(entry.partitions().len() as u32)
    }

    /// High watermarks of every partition of `topic`, indexed by partition: the offset the
    /// next record will get, so also the number of records ever written when nothing was
    /// deleted.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, AdminError> {
        let partitions = self.partitions(topic)?;
        let err = |source: KafkaError| AdminError::Request {
            operation: "reading end offsets (ListOffsets)",
            topic: topic.to_owned(),
            source: Box::new(source),
        };
        let keys: Vec<TopicPartition> = (0..partitions as i32)
            .map(|p| (topic.to_owned(), p))
            .collect();
        // One ListOffsets request per broker for all partitions (see `watermarks`).
        let consumer = self.group_consumer(OFFSETS_CLIENT_GROUP).map_err(err)?;
        let mut ends = watermarks::end_offsets(&consumer, &keys, self.timeout()).map_err(err)?;
        keys.iter()
            .map(|k| ends.remove(k).unwrap_or_else(|| Err(watermarks::missing())))
            .map(|r| r.map_err(err))
            .collect()
    }

    /// The committed offsets of `group` for partitions `0..partitions` of `topic`, indexed by
    /// partition; `None` where the group has committed nothing. Works for partitions owned by
    /// any member, or by none: the answer comes from the group coordinator, not from an
    /// assignment. A committed offset is the next record to process, so "the group is done
    /// with offset f" reads `committed > f`.
    pub fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: u32,
    ) -> Result<Vec<Option<i64>>, AdminError> {
        self.committed_for(group, topic, (0..partitions as i32).collect())
    }

    /// The committed offset of `group` for one partition (the migration barrier check);
    /// `None` if the group has committed nothing there.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, AdminError> {
        Ok(self
            .committed_for(group, topic, vec![partition])?
            .pop()
            .flatten())
    }

    fn committed_for(
        &self,
        group: &str,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<Vec<Option<i64>>, AdminError> {
        let failed = |source: KafkaError| AdminError::Committed {
            group: group.to_owned(),
            topic: topic.to_owned(),
            source: Box::new(source),
        };
        let consumer = self.group_consumer(group).map_err(failed)?;
        let mut request = TopicPartitionList::with_capacity(partitions.len());
        for &partition in &partitions {
            request.add_partition(topic, partition);
        }
        let response = consumer
            .committed_offsets(request, self.timeout())
            .map_err(failed)?;
        partitions
            .iter()
            .map(|&partition| {
                let element = response.find_partition(topic, partition).ok_or_else(|| {
                    failed(KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition))
                })?;
                element.error().map_err(failed)?;
                Ok(match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
            })
            .collect()
    }

    /// Number of brokers in a full metadata response: the broker's readiness probe.
    pub(crate) fn cluster_broker_count(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let metadata = self.inner.client.inner().fetch_metadata(None, timeout)?;
        Ok(metadata.brokers().len())
    }

    fn group_consumer(&self, group: &str) -> Result<Arc<BaseConsumer>, KafkaError> {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(consumer) = groups.get(group) {
            return Ok(Arc::clone(consumer));
        }
        // Never subscribes, so it never joins the group or takes partitions from its members.
        let consumer: BaseConsumer = self.inner.settings.consumer_config(group).create()?;
        let consumer = Arc::new(consumer);
        groups.insert(group.to_owned(), Arc::clone(&consumer));
        Ok(consumer)
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field(
                "bootstrap_servers",
                &self.inner.settings.bootstrap_servers(),
            )
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
