//! `keyshift experiment --trace`: where each record's latency went.
//!
//! With `--trace`, the run keeps per-record timestamps from both ends — the producer's
//! delivery report (acknowledgement time, time held behind a fence) and the worker's view
//! ([`DeliveredRecord::fetched_at`](keyshift_kafka::DeliveredRecord), park time, processing
//! start and end) — joined on partition and offset, and splits every measured record's
//! end-to-end latency (scheduled send → processed) into five parts that add up to it:
//!
//! | part | from → to |
//! |---|---|
//! | producer wait | held in the keyshift producer behind its key's fence |
//! | broker | scheduled send → acknowledged (or fetched, if earlier), minus producer wait: batching, the produce round trip, replication |
//! | queueing | acknowledged → processing start, minus parked: waiting in the partition behind earlier records, in the broker or the worker's prefetch |
//! | parked | held by the worker's order gate until the migration barrier passed |
//! | service | processing start → end |
//!
//! The report gives each part's mean (the means add up to the mean end-to-end latency), its
//! p99, and its share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keyshift_core::stats::LatencyHistogram;
use serde::Serialize;

/// The producer side of one record.
#[derive(Debug, Clone, Copy)]
struct Acked {
    ack_us: u64,
    fenced_us: u64,
}

/// The worker side of one measured record.
#[derive(Debug, Clone, Copy)]
pub struct Processed {
    /// Partition it was consumed from.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Its scheduled send time (the probe's `sent_us`), µs since the Unix epoch.
    pub scheduled_us: u64,
    /// When the worker received it from Kafka, µs since the Unix epoch.
    pub fetched_us: u64,
    /// How long it was parked, µs.
    pub parked_us: u64,
    /// Processing start, µs since the Unix epoch.
    pub start_us: u64,
    /// Processing end, µs since the Unix epoch.
    pub end_us: u64,
}

/// Timestamps gathered during one strategy's run (shared by the sender and the workers).
#[derive(Debug, Default)]
pub struct TraceLog {
    acks: Mutex<HashMap<(u32, i64), Acked>>,
    processed: Mutex<Vec<Processed>>,
}

impl TraceLog {
    /// Notes a delivery report.
    pub fn acked(&self, partition: u32, offset: i64, ack_us: u64, fenced: Option<Duration>) {
        let fenced_us = fenced.map_or(0, |d| d.as_micros() as u64);
        if let Ok(mut acks) = self.acks.lock() {
            acks.insert((partition, offset), Acked { ack_us, fenced_us });
        }
    }

    /// Notes a processed record.
    pub fn processed(&self, record: Processed) {
        if let Ok(mut processed) = self.processed.lock() {
            processed.push(record);
        }
    }

    /// Joins both sides into the breakdown; records without a delivery report are left out.
    pub fn breakdown(&self) -> LatencyBreakdown {
        let acks = self.acks.lock().map(|a| a.clone()).unwrap_or_default();
        let processed = self.processed.lock().map(|p| p.clone()).unwrap_or_default();
        let mut parts: [LatencyHistogram; 5] = Default::default();
        let mut e2e = LatencyHistogram::new();
        for r in &processed {
            let Some(a) = acks.get(&(r.partition, r.offset)) else {
                continue;
            };
            // The consumer may see a record before the producer's acknowledgement arrives.
            let stored = a.ack_us.min(r.fetched_us).max(r.scheduled_us);
            let start = r.start_us.max(stored);
            let producer = a.fenced_us.min(stored - r.scheduled_us);
            let broker = stored - r.scheduled_us - producer;
            let parked = r.parked_us.min(start - stored);
            let queueing = start - stored - parked;
            let service = r.end_us.saturating_sub(start);
            for (h, us) in parts
                .iter_mut()
                .zip([producer, broker, queueing, parked, service])
            {
                h.record_secs(us as f64 / 1e6);
            }
            e2e.record_secs((r.end_us.max(start) - r.scheduled_us) as f64 / 1e6);
        }
        let e2e_mean_ms = e2e.mean_ms();
        let part = |h: &LatencyHistogram| Part {
            mean_ms: h.mean_ms(),
            p99_ms: h.quantile_ms(0.99),
            share: if e2e_mean_ms > 0.0 {
                h.mean_ms() / e2e_mean_ms
            } else {
                0.0
            },
        };
        LatencyBreakdown {
            records: e2e.len(),
            e2e_mean_ms,
            producer_wait: part(&parts[0]),
            broker: part(&parts[1]),
            queueing: part(&parts[2]),
            parked: part(&parts[3]),
            service: part(&parts[4]),
        }
    }
}

/// One part of the latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Part {
    /// Mean per record, milliseconds.
    pub mean_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Mean ÷ mean end-to-end latency.
    pub share: f64,
}

/// Where latency went for one strategy (the JSON's `latency_breakdown`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyBreakdown {
    /// Measured records with both sides known.
    pub records: u64,
    /// Mean end-to-end latency of those records; the parts' means add up to it.
    pub e2e_mean_ms: f64,
    /// Held in the producer behind a fence.
    pub producer_wait: Part,
    /// Produce round trip, batching and replication.
    pub broker: Part,
    /// Waiting in the partition behind earlier records.
    pub queueing: Part,
    /// Held by the order gate for a migration barrier.
    pub parked: Part,
    /// Processing.
    pub service: Part,
}

impl LatencyBreakdown {
    /// The parts with their display names, in pipeline order.
    pub fn parts(&self) -> [(&'static str, &Part); 5] {
        [
            ("producer wait", &self.producer_wait),
            ("broker", &self.broker),
            ("queueing", &self.queueing),
            ("parked", &self.parked),
            ("service", &self.service),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_end_to_end() {
        let log = TraceLog::default();
        // Scheduled at 1000 µs, 300 µs behind a fence, acknowledged at 2000, fetched at
        // 2500, parked 1000, processing 4000 → 4500.
        log.acked(0, 7, 2_000, Some(Duration::from_micros(300)));
        log.processed(Processed {
            partition: 0,
            offset: 7,
            scheduled_us: 1_000,
            fetched_us: 2_500,
            parked_us: 1_000,
            start_us: 4_000,
            end_us: 4_500,
        });
        // A record fetched before its acknowledgement arrived.
        log.acked(1, 0, 3_000, None);
        log.processed(Processed {
            partition: 1,
            offset: 0,
            scheduled_us: 1_000,
            fetched_us: 2_000,
            parked_us: 0,
            start_us: 2_100,
            end_us: 2_200,
        });
        // Never acknowledged: left out.
        log.processed(Processed {
            partition: 2,
            offset: 0,
            scheduled_us: 0,
            fetched_us: 0,
            parked_us: 0,
            start_us: 0,
            end_us: 1,
        });
        let b = log.breakdown();
        assert_eq!(b.records, 2);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-3;
        assert!(near(b.producer_wait.mean_ms, 0.15), "{b:?}");
        assert!(near(b.broker.mean_ms, (0.7 + 1.0) / 2.0), "{b:?}");
        assert!(near(b.queueing.mean_ms, (1.0 + 0.1) / 2.0), "{b:?}");
        assert!(near(b.parked.mean_ms, 0.5), "{b:?}");
        assert!(near(b.service.mean_ms, (0.5 + 0.1) / 2.0), "{b:?}");
        let sum: f64 = b.parts().iter().map(|(_, p)| p.mean_ms).sum();
        assert!(near(sum, b.e2e_mean_ms), "{sum} vs {}", b.e2e_mean_ms);
        assert!(near(b.e2e_mean_ms, (3.5 + 1.2) / 2.0));
    }
}
