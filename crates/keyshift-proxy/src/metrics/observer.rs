//! [`ProxyMetrics`] as the proxy's [`Observer`]: maps each wire event to the counts it moves.

use crate::observe::{
    CloseReason, ConnInfo, DecodeFailure, Direction, FetchedBatch, Observer, OffsetCommitEvent,
    OpaqueRelay, ProduceAck, ProducedBatch, RequestEvent, ResponseEvent, SaslEvent, TlsSide,
    Watermark,
};
use crate::wire::records::RecordBatch;
use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::ProxyMetrics;

/// The offsets of a batch's records: read from the records when they were decoded, otherwise
/// the first `record_count` offsets from the base (exact unless compaction left gaps).
fn offsets(batch: &RecordBatch) -> impl Iterator<Item = i64> + '_ {
    let decoded = batch.records.iter().map(|r| r.offset);
    let header_only = if batch.records.is_empty() {
        let count = i64::from(batch.record_count.max(0));
        batch.base_offset..batch.base_offset.saturating_add(count)
    } else {
        0..0
    };
    decoded.chain(header_only)
}

impl Observer for ProxyMetrics {
    fn connection_opened(&self, conn: &ConnInfo) {
        ProxyMetrics::connection_opened(self, conn.id);
    }

    fn tls_handshake(&self, _conn: &ConnInfo, side: TlsSide, outcome: Result<(), &str>) {
        ProxyMetrics::tls_handshake(self, side.as_str(), outcome.is_ok());
    }

    fn sasl(&self, e: &SaslEvent<'_>) {
        ProxyMetrics::sasl(self, e.step.as_str(), e.mechanism, e.error_code);
    }

    fn connection_closed(&self, conn: &ConnInfo, reason: &CloseReason) {
        ProxyMetrics::connection_closed(self, conn.id, reason.label());
    }

    fn request(&self, e: &RequestEvent<'_>) {
        if let Some(RequestKind::Fetch(f)) = e.body {
            self.fetch_requested(
                e.conn.id,
                f.topics.iter().flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.topic.as_str(), t.topic_id, p.partition, p.fetch_offset))
                }),
            );
        }
        ProxyMetrics::request(
            self,
            e.api_key,
            e.api_version,
            e.client_id.unwrap_or(""),
            e.bytes as u64,
        );
    }

    fn response(&self, e: &ResponseEvent<'_>) {
        if let Some(ResponseKind::Metadata(m)) = e.body {
            for t in &m.topics {
                if let Some(name) = &t.name {
                    self.topic_id(name.as_str(), t.topic_id);
                }
            }
        }
        ProxyMetrics::response(
            self,
            e.api_key,
            e.api_version,
            e.client_id.unwrap_or(""),
            e.bytes as u64,
            e.latency,
            e.error_codes,
        );
    }

    fn produced(&self, e: &ProducedBatch<'_>) {
        // Control batches carry transaction markers, not application keys; a keyshift fence
        // is protocol too, so it does not count towards its key's heat.
        if e.batch.control {
            return;
        }
        self.produced_keys(
            e.topic,
            e.batch
                .records
                .iter()
                .filter(|r| !r.is_fence())
                .map(|r| r.key.as_deref()),
            e.at,
        );
    }

    fn produce_acked(&self, e: &ProduceAck<'_>) {
        if e.error_code != 0 {
            return;
        }
        ProxyMetrics::produce_acked(
            self,
            e.topic,
            e.partition,
            Some(e.base_offset),
            e.record_count,
            e.record_bytes,
            e.request_at,
        );
    }

    fn fetched(&self, e: &FetchedBatch<'_>) {
        if e.batch.control {
            return;
        }
        ProxyMetrics::fetched(
            self,
            e.conn.id,
            e.topic,
            e.partition,
            offsets(e.batch),
            e.batch.next_offset().saturating_sub(1),
            e.batch.size as u64,
            e.at,
        );
    }

    fn watermark(&self, e: &Watermark<'_>) {
        self.high_watermark(e.topic, e.partition, e.offset);
    }

    fn offset_committed(&self, e: &OffsetCommitEvent<'_>) {
        if e.error_code == 0 {
            self.committed(e.group, e.topic, e.partition, e.offset);
        }
    }

    fn decode_failed(&self, e: &DecodeFailure<'_>) {
        tracing::debug!(
            conn = e.conn.id,
            api = e.api_name,
            version = e.api_version,
            reason = e.reason,
            "relayed a frame part that did not decode"
        );
        ProxyMetrics::decode_failed(
            self,
            e.direction == Direction::ToBroker,
            e.api_name,
            e.label,
        );
    }

    fn relayed_opaque(&self, e: &OpaqueRelay<'_>) {
        ProxyMetrics::opaque_request(self, e.api_key, e.reason.label());
    }

    fn passthrough(&self, conn: &ConnInfo, direction: Direction, bytes: usize) {
        self.passthrough_bytes(conn.id, direction == Direction::ToBroker, bytes as u64);
    }
}
