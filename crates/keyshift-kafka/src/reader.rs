//! A consumer that reads keyshift's own state topics (the route topic, the control log, the
//! trace aggregator's checkpoints and its output re-read after a restart) by assigned
//! partitions: it never joins a group or commits, reports the end of each partition
//! (`enable.partition.eof`) when asked, so a replay knows when it caught up — a reader that
//! follows a log for good does not ask, as librdkafka also logs every end reached as an
//! error — and asks for short fetch waits so that a broker holding fetches for the full wait
//! does not slow a producer's start or a member's reading of the control log.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::ClientSettings;

/// A reader of `topic`'s partitions, each from its offset in `starts`, with client id
/// `client`, reporting partition ends if `eof`; the error says what failed, for the caller
/// to name the topic.
pub(crate) fn state_reader(
    settings: &ClientSettings,
    client: &str,
    topic: &str,
    starts: impl IntoIterator<Item = (i32, Offset)>,
    eof: bool,
) -> Result<BaseConsumer, String> {
    let mut config = settings.consumer_config(client);
    config
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .set("fetch.wait.max.ms", "20");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("cannot create a reader: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for (p, offset) in starts {
        assignment
            .add_partition_offset(topic, p, offset)
            .map_err(|e| format!("cannot assign partition {p}: {e}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot assign its partitions: {e}"))?;
    Ok(consumer)
}
