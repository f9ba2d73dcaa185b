//! Log-start and log-end offsets of many partitions at once.
//!
//! librdkafka's `fetch_watermarks` asks one partition at a time and sends two ListOffsets
//! requests for it (earliest, latest): reading a 100-partition topic every second is ~400
//! requests a second, which was 85 % of the dashboard's CPU. ListOffsets takes a list, and
//! `offsets_for_times` sends one request per partition leader for a whole list; the
//! protocol's special timestamps −2 (earliest) and −1 (latest) make it answer watermarks. So
//! [`watermarks`] costs two requests per broker, whatever the number of partitions, and
//! [`end_offsets`] one.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

/// One partition of a topic.
pub type TopicPartition = (String, i32);

/// Per partition: its offset, or why the broker gave none.
pub type PerPartition<T> = BTreeMap<TopicPartition, Result<T, KafkaError>>;

/// A partition the broker's answer left out (every partition asked gets an entry: this one).
pub(crate) fn missing() -> KafkaError {
    KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition)
}

/// The offsets ListOffsets answers for `partitions` at the special timestamp `at`
/// ([`Offset::Beginning`] or [`Offset::End`]).
fn list_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[TopicPartition],
    at: Offset,
    timeout: Duration,
) -> Result<PerPartition<i64>, KafkaError> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition_offset(topic, *p, at)?;
    }
    let answer = consumer.offsets_for_times(tpl, timeout)?;
    let mut out: PerPartition<i64> = partitions
        .iter()
        .map(|k| (k.clone(), Err(missing())))
        .collect();
    for elem in answer.elements() {
        let value = match (elem.error(), elem.offset()) {
            (Err(e), _) => Err(e),
            (Ok(()), Offset::Offset(o)) => Ok(o),
            (Ok(()), _) => Err(missing()),
        };
        out.insert((elem.topic().to_owned(), elem.partition()), value);
    }
    Ok(out)
}

/// Low and high watermarks of `partitions`: two ListOffsets rounds. An error is a failure of
/// the whole request (no broker answered); per-partition problems are per-partition errors.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<PerPartition<(i64, i64)>, KafkaError> {
    let low = list_offsets(consumer, partitions, Offset::Beginning, timeout)?;
    let mut high = list_offsets(consumer, partitions, Offset::End, timeout)?;
    Ok(low
        .into_iter()
        .map(|(k, l)| {
            let h = high.remove(&k).unwrap_or_else(|| Err(missing()));
            let w = l.and_then(|l| h.map(|h| (l, h)));
            (k, w)
        })
        .collect())
}

/// High watermarks (log-end offsets) of `partitions`: one ListOffsets round.
pub fn end_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<PerPartition<i64>, KafkaError> {
    list_offsets(consumer, partitions, Offset::End, timeout)
}
