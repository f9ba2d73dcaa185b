//! Cost of one lag collection: exact lag seconds (one fetch of the first unconsumed record
//! per lagging partition) against interpolation only, same broker, same run, alternating.
//!
//! Run with `cargo bench -p keyshift-kafka --bench lag` (env: `KEYSHIFT_BENCH_ROUNDS`,
//! default 15; `KEYSHIFT_BENCH_PARTITIONS`, default 12; `KEYSHIFT_BENCH_GROUPS`, default 3).
//!
//! Setup: one topic, 200 records per partition, each group committed halfway, so every
//! partition of every group lags. Each round times one `collect` of each collector (wall
//! clock; the embedded tansu broker runs in this process, so this is the latency a
//! `--watch`/`--serve` interval must cover, not CPU cost). Medians and the ratio
//! exact/interpolated are printed. Under `cargo test --all-targets` it runs one small round.

use std::time::{Duration, Instant, SystemTime};

use keyshift_kafka::bench::env_or;
use keyshift_kafka::lag::{LagCollector, LagCollectorConfig};
use keyshift_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const RECORDS_PER_PARTITION: i64 = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (rounds, partitions, groups) = if smoke {
        (1, 2, 1)
    } else {
        (
            env_or("KEYSHIFT_BENCH_ROUNDS", 15),
            env_or("KEYSHIFT_BENCH_PARTITIONS", 12) as i32,
            env_or("KEYSHIFT_BENCH_GROUPS", 3),
        )
    };
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let topic = "lag-bench";
    broker.create_topic(topic, partitions as u32).unwrap();
    let producer: FutureProducer = broker.client_settings().producer_config().create().unwrap();
    let mut pending = Vec::new();
    for p in 0..partitions {
        for i in 0..RECORDS_PER_PARTITION {
            let key = format!("k{i}");
            pending.push(
                producer
                    .send_result(FutureRecord::to(topic).partition(p).key(&key).payload("v"))
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
    }
    for f in pending {
        futures_executor::block_on(f).unwrap().unwrap();
    }
    let names: Vec<String> = (0..groups).map(|g| format!("bench-group-{g}")).collect();
    for name in &names {
        let consumer: BaseConsumer = broker
            .client_settings()
            .consumer_config(name)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(RECORDS_PER_PARTITION / 2))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }

    let make = |exact: bool| {
        LagCollector::with_config(
            &broker.client_settings(),
            LagCollectorConfig {
                exact_lag_seconds: exact,
                ..LagCollectorConfig::default()
            },
        )
        .unwrap()
    };
    let (mut exact, mut interpolated) = (make(true), make(false));
    // A first collection each connects the clients and finds the coordinator: not measured.
    exact.collect(&names, SystemTime::now()).unwrap();
    interpolated.collect(&names, SystemTime::now()).unwrap();

    let (mut t_exact, mut t_interp) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let out = exact.collect(&names, SystemTime::now()).unwrap();
        t_exact.push(started.elapsed());
        let exact_sources = out
            .iter()
            .flat_map(|g| &g.partitions)
            .filter(|p| p.lag_seconds_source == Some(keyshift_core::lag::LagSecondsSource::Exact))
            .count();
        assert_eq!(
            exact_sources,
            groups * partitions as usize,
            "every lag exact"
        );

        let started = Instant::now();
        interpolated.collect(&names, SystemTime::now()).unwrap();
        t_interp.push(started.elapsed());
    }
    let (e, i) = (median(t_exact), median(t_interp));
    println!(
        "lag collection, {groups} groups x {partitions} partitions, {rounds} rounds (medians):"
    );
    println!("  exact lag seconds   {:>9.1} ms", e.as_secs_f64() * 1e3);
    println!("  interpolated only   {:>9.1} ms", i.as_secs_f64() * 1e3);
    println!(
        "  exact / interpolated {:>8.2}x",
        e.as_secs_f64() / i.as_secs_f64()
    );
    broker.shutdown();
}
