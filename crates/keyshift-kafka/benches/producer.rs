//! Producer overhead: keyshift's producer against the plain rdkafka producer, same broker,
//! same run, alternating.
//!
//! Run with `cargo bench -p keyshift-kafka --bench producer` (options through env vars:
//! `KEYSHIFT_BENCH_RECORDS` per round, default 20000; `KEYSHIFT_BENCH_ROUNDS`, default 5;
//! `KEYSHIFT_BENCH_BOOTSTRAP` to use an existing cluster instead of the embedded broker;
//! `KEYSHIFT_BENCH_VARIANTS`, comma-separated, to run only some variants besides `plain` —
//! e.g. to profile one with `perf record`).
//!
//! Each round sends the same Zipf key stream (s = 1.1, v = 2.72, 2800 keys, as the seed's
//! client) of ~100-byte records through three producers in turn and awaits every delivery:
//! - `plain`: an rdkafka `FutureProducer` with the same idempotent configuration and
//!   `partitioner=murmur2_random` (the Java client's placement, so the broker sees the same
//!   per-partition load);
//! - `keyshift/hash` and `keyshift/keyshift`: a [`KeyshiftProducer`] with durable routes
//!   (`Routes::Durable`, the single-producer path) and those strategies
//!   (`keyshift` with no warm-up and a 20 ms rebalance interval, so keys move and fence
//!   while a round's records are routed);
//! - `keyshift/hash+moves`: `hash` plus a forced move ([`KeyshiftProducer::move_key`]) of one
//!   of the 16 hottest keys every 500 records — the fence/hold/route-header machinery alone;
//! - `keyshift/keyshift+coordinated`: `keyshift` as one member of coordinated producers
//!   (`Routes::Coordinated`, the default; measured once it decides): moves go through the control log
//!   (propose, its own fence, ready, commit), and every record is counted for its load
//!   summary.
//!
//! It reports records/s (wall clock, first send to last acknowledgement) and CPU time per
//! record of this process. The embedded broker (tansu on sqlite, ~20 k records/s) runs in a
//! *child process*, so the CPU time here is the producer's alone — librdkafka's threads,
//! the delivery futures and keyshift's routing — which isolates the overhead even when the
//! broker bounds the throughput. Medians over the rounds and ratios to `plain` are printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyshift_core::strategy::{KeyshiftConfig, StrategyConfig};
use keyshift_core::workload::key_name;
use keyshift_kafka::bench::{cpu_time, env_or, median, zipf_keys};
use keyshift_kafka::{
    Admin, ClientSettings, EmbeddedBroker, KeyshiftProducer, PendingDelivery, Routes,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

const PARTITIONS: u32 = 8;
const VALUE_BYTES: usize = 100;
const CHILD_ENV: &str = "KEYSHIFT_BENCH_BROKER_CHILD";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return run_broker_child();
    }
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run keeps them from
    // rotting without spending the test suite's time on measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let records = if smoke {
        500
    } else {
        env_or("KEYSHIFT_BENCH_RECORDS", 20_000)
    };
    let rounds = if smoke {
        1
    } else {
        env_or("KEYSHIFT_BENCH_ROUNDS", 5)
    };
    let (bootstrap, mut child) = match std::env::var("KEYSHIFT_BENCH_BOOTSTRAP") {
        Ok(bootstrap) => (bootstrap, None),
        Err(_) => {
            let (bootstrap, child) = spawn_broker_child();
            (bootstrap, Some(child))
        }
    };
    let settings = ClientSettings::new(bootstrap).client_id("keyshift-bench");
    let admin = Admin::new(&settings).expect("admin client");
    let keys = zipf_keys(records);
    let value = vec![b'v'; VALUE_BYTES];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let all = [
        "plain",
        "keyshift/hash",
        "keyshift/hash+moves",
        "keyshift/keyshift",
        "keyshift/keyshift+coordinated",
    ];
    // `plain` always runs: every ratio is to it.
    let wanted = std::env::var("KEYSHIFT_BENCH_VARIANTS").ok();
    let variants: Vec<&str> = all
        .into_iter()
        .filter(|v| {
            *v == "plain"
                || wanted
                    .as_deref()
                    .is_none_or(|w| w.split(',').any(|x| x.trim() == *v))
        })
        .collect();
    if let Some(w) = &wanted {
        for x in w.split(',').map(str::trim) {
            assert!(
                all.contains(&x),
                "KEYSHIFT_BENCH_VARIANTS: unknown variant '{x}' (known: {all:?})"
            );
        }
    }
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    println!(
        "producer overhead: {records} records of {VALUE_BYTES} B per round, {rounds} rounds \
         (+1 warm-up), {PARTITIONS} partitions, zipf s=1.1 over 2800 keys"
    );
    let stamp = std::process::id();
    for round in 0..=rounds {
        // Alternate the order so drift (the broker's growing database) hits all alike.
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            let topic = format!("bench-{stamp}-{round}-{v}");
            admin.create_topic(&topic, PARTITIONS).expect("topic");
            let sample =
                runtime.block_on(run_variant(variants[v], &settings, &topic, &keys, &value));
            if round > 0 {
                results[v].push(sample);
            }
        }
    }
    println!(
        "{:<18} {:>12} {:>9} {:>12} {:>9} {:>8}",
        "variant", "records/s", "ratio", "cpu µs/rec", "ratio", "fences"
    );
    let plain_rate = median(results[0].iter().map(|s| s.rate));
    let plain_cpu = median(results[0].iter().map(|s| s.cpu_us_per_record));
    for (v, name) in variants.iter().enumerate() {
        let rate = median(results[v].iter().map(|s| s.rate));
        let cpu = median(results[v].iter().map(|s| s.cpu_us_per_record));
        let fences = median(results[v].iter().map(|s| s.fences as f64));
        println!(
            "{name:<18} {rate:>12.0} {:>9.3} {cpu:>12.2} {:>9.3} {fences:>8.0}",
            rate / plain_rate,
            cpu / plain_cpu
        );
    }
    for (v, name) in variants.iter().enumerate() {
        let rates: Vec<String> = results[v]
            .iter()
            .map(|s| format!("{:.0}", s.rate))
            .collect();
        let cpus: Vec<String> = results[v]
            .iter()
            .map(|s| format!("{:.2}", s.cpu_us_per_record))
            .collect();
        println!("  {name}: records/s {rates:?}, cpu µs/rec {cpus:?}");
    }
    if let Some(child) = child.as_mut() {
        // Closing its stdin tells the broker child to stop.
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_us_per_record: f64,
    fences: u64,
}

async fn run_variant(
    variant: &str,
    settings: &ClientSettings,
    topic: &str,
    keys: &[Vec<u8>],
    value: &[u8],
) -> Sample {
    let (start, cpu0, fences) = if variant == "plain" {
        let producer: FutureProducer = settings
            .producer_config()
            .set("partitioner", "murmur2_random")
            .create()
            .expect("plain producer");
        settle().await;
        let start = Instant::now();
        let cpu0 = cpu_time();
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(keys.len());
        for key in keys {
            let mut record = FutureRecord::to(topic).key(key.as_slice()).payload(value);
            loop {
                match producer.send_result(record) {
                    Ok(future) => break pending.push(future),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((err, _)) => panic!("plain send failed: {err}"),
                }
            }
        }
        for future in pending {
            future
                .await
                .expect("delivery report")
                .map_err(|(err, _)| err)
                .expect("delivered");
        }
        (start, cpu0, 0)
    } else {
        let forced_moves = variant.ends_with("+moves");
        let coordinated = variant.ends_with("+coordinated");
        let strategy = variant
            .trim_start_matches("keyshift/")
            .trim_end_matches("+moves")
            .trim_end_matches("+coordinated");
        // A round's records are all routed within tens of milliseconds (acknowledgements take
        // the rest of the round): no warm-up and a 20 ms rebalance interval, so that keys do
        // move (and fence) during the measurement.
        let config = StrategyConfig {
            keyshift: KeyshiftConfig {
                warmup_secs: 0.0,
                rebalance_interval_secs: 0.02,
                cooldown_secs: 1.0,
                use_feedback: false,
                ..KeyshiftConfig::default()
            },
            ..StrategyConfig::default()
        };
        let mut builder = KeyshiftProducer::builder(settings.clone(), topic)
            .strategy(strategy)
            .strategy_config(config)
            .partitions(PARTITIONS);
        // Routes are coordinated by default; the other variants measure the single-producer
        // path (durable routes) they were introduced with, so the two can be compared.
        builder = builder.routes(if coordinated {
            Routes::Coordinated(None)
        } else {
            Routes::Durable(None)
        });
        let producer = builder.build().expect("keyshift producer");
        if coordinated {
            // A lone member claims the first term at once; measure once it decides.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !producer.stats().coordination.is_some_and(|c| c.decider) {
                assert!(Instant::now() < deadline, "the lone member never decided");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        settle().await;
        let start = Instant::now();
        let cpu0 = cpu_time();
        let mut pending: Vec<PendingDelivery> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            if forced_moves && i % 500 == 499 {
                // Every 500 records one of the 16 hottest keys moves one partition on: the
                // full fence / hold / route-header path with no strategy cost.
                let hot = key_name((i / 500 % 16) as u64).into_bytes();
                let to = (producer.current_partition(&hot) + 1) % PARTITIONS;
                producer.move_key(&hot, to).expect("valid partition");
            }
            loop {
                match producer.try_send(key, value, Vec::new()) {
                    Ok(p) => break pending.push(p),
                    Err(err) if err.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(err) => panic!("keyshift send failed: {err}"),
                }
            }
        }
        for p in pending {
            p.await.expect("delivered");
        }
        (start, cpu0, producer.stats().fences)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    Sample {
        rate: keys.len() as f64 / elapsed,
        cpu_us_per_record: cpu.as_secs_f64() * 1e6 / keys.len() as f64,
        fences,
    }
}

/// Gives a new producer time to connect before the clock starts, alike for every variant
/// (the coordinated one waits to decide first, and would otherwise start warmer than the
/// others, whose first records pay for the connection and the metadata).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Starts this binary again as the broker process and reads its bootstrap address.
fn spawn_broker_child() -> (String, Child) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("broker child starts");
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("bootstrap line from the broker child");
    let bootstrap = line.trim().to_owned();
    assert!(!bootstrap.is_empty(), "the broker child did not start");
    (bootstrap, child)
}

/// The child: an embedded broker until stdin closes.
fn run_broker_child() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let mut out = std::io::stdout();
    writeln!(out, "{}", broker.bootstrap_servers()).expect("stdout");
    out.flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    broker.shutdown();
}
