//! The processing pause a scale step causes, eager vs cooperative rebalancing.
//!
//! An autoscaler step or a deploy adds or removes a group member. With eager rebalancing every
//! member gives up every partition and waits for the new assignment, so the whole group stops;
//! with cooperative rebalancing (the ordered consumer's default) only the partitions that
//! change owner stop. This bench runs both on the embedded broker: a producer sends a steady
//! keyed stream (64 keys, 400 records/s, 8 partitions), one ordered consumer runs, then a
//! second and a third join at fixed times (two scale steps). Each member has 8 slots and an
//! I/O-bound handler (a 10 ms sleep per record), so half its capacity is in use before
//! the first step. For each step it reports, over the 6 s after the new member starts:
//! - **kept partitions**: the longest gap between two processed records of a partition that
//!   kept its owner (the worst one) — what a rebalance costs the partitions it does not move;
//! - **moved partitions**: the same gap for partitions that changed owner (median over them);
//! - **group stop**: the longest interval in which no member processed any record.
//!
//! Run with `cargo bench -p keyshift-kafka --bench rebalance` (env: `KEYSHIFT_BENCH_ROUNDS`,
//! default 3). Each round prints the figures per step; the medians over rounds and steps and
//! their range follow. Under `cargo test --all-targets` it runs one short step per kind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyshift_kafka::bench::{env_or, median};
use keyshift_kafka::{EmbeddedBroker, OrderedConsumerBuilder, Rebalancing};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: u32 = 8;
const KEYS: u32 = 64;
const RATE: u32 = 400;
const SLOTS: usize = 8;
const SERVICE: Duration = Duration::from_millis(10);

/// Processed records: when, on which partition, by which member.
type Log = Arc<Mutex<Vec<(Instant, u32, usize)>>>;

/// One scale step's figures, in seconds.
#[derive(Debug, Clone, Copy)]
struct Step {
    kept: f64,
    moved: f64,
    group_stop: f64,
}

/// Longest gap between consecutive instants of `times` (sorted) within `[from, to]`, the
/// window's ends counting as instants.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|t| **t >= from && **t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to - last)
}

fn measure(log: &Log, from: Instant, to: Instant) -> Step {
    let mut records = log.lock().unwrap().clone();
    records.sort();
    let all: Vec<Instant> = records.iter().map(|(t, ..)| *t).collect();
    let (mut kept, mut moved) = (Vec::new(), Vec::new());
    for p in 0..PARTITIONS {
        let of_p = || records.iter().filter(move |(_, q, _)| *q == p);
        // Owners before and after the step: the members of the partition's last record before
        // the window and of its first one after it (the run goes on past the last window).
        let before = of_p()
            .filter(|(t, ..)| *t < from)
            .map(|(.., m)| *m)
            .next_back();
        let after = of_p().find(|(t, ..)| *t > to).map(|(.., m)| *m);
        let times: Vec<Instant> = of_p().map(|(t, ..)| *t).collect();
        let gap = longest_gap(&times, from, to).as_secs_f64();
        let changed =
            before != after || of_p().any(|(t, _, m)| *t >= from && *t <= to && Some(*m) != before);
        if changed {
            moved.push(gap);
        } else {
            kept.push(gap);
        }
    }
    Step {
        kept: kept.iter().copied().fold(0.0, f64::max),
        moved: median(moved),
        group_stop: longest_gap(&all, from, to).as_secs_f64(),
    }
}

/// One run: a member, then `steps` more, each followed by `window`; the figures per step.
fn run(
    broker: &EmbeddedBroker,
    kind: Rebalancing,
    name: &str,
    steps: usize,
    window: Duration,
) -> Vec<Step> {
    let topic = format!("rebalance-{name}");
    broker.create_topic(&topic, PARTITIONS).unwrap();
    let settings = broker.client_settings();
    let log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer_thread = {
        let (settings, topic, stop) = (settings.clone(), topic.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let producer: BaseProducer = settings.producer_config().create().unwrap();
            let gap = Duration::from_secs(1) / RATE;
            let mut next = Instant::now();
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("k{}", seq % u64::from(KEYS));
                let value = seq.to_string();
                let _ = producer.send(BaseRecord::to(&topic).key(&key).payload(&value));
                producer.poll(Duration::ZERO);
                seq += 1;
                next += gap;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let _ = producer.flush(Duration::from_secs(10));
        })
    };
    let member = |i: usize| {
        let log = Arc::clone(&log);
        OrderedConsumerBuilder::new(&settings, format!("rebalance-{name}"), &topic)
            .rebalancing(kind)
            .concurrency(SLOTS)
            .session_timeout(Duration::from_secs(6))
            .thread_name(format!("member-{i}"))
            .spawn_async(move |r: keyshift_kafka::DeliveredRecord| {
                let log = Arc::clone(&log);
                async move {
                    tokio::time::sleep(SERVICE).await;
                    log.lock().unwrap().push((Instant::now(), r.partition, i));
                    Ok::<(), std::convert::Infallible>(())
                }
            })
            .unwrap()
    };
    let mut members = vec![member(0)];
    // Warm-up: the first member owns everything and keeps up.
    let started = Instant::now();
    while log.lock().unwrap().len() < 2 * RATE as usize {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no records processed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut windows = Vec::new();
    for i in 1..=steps {
        let from = Instant::now();
        members.push(member(i));
        std::thread::sleep(window);
        windows.push((from, Instant::now()));
    }
    // Long enough for every partition's owner after the last step to show.
    std::thread::sleep(Duration::from_secs(2));
    let steps_out = windows
        .into_iter()
        .map(|(from, to)| measure(&log, from, to))
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer_thread.join().unwrap();
    for m in members {
        m.stop().unwrap();
    }
    steps_out
}

fn main() {
    // RUST_LOG=keyshift_kafka=info shows each member's revocations and assignments.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (rounds, steps, window) = if smoke {
        (1, 1, Duration::from_secs(4))
    } else {
        (
            env_or("KEYSHIFT_BENCH_ROUNDS", 3),
            2,
            Duration::from_secs(6),
        )
    };
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let mut summary = Vec::new();
    for (kind, label) in [
        (Rebalancing::Eager, "eager"),
        (Rebalancing::Cooperative, "cooperative"),
    ] {
        let mut all = Vec::new();
        for r in 1..=rounds {
            let steps = run(&broker, kind, &format!("{label}-{r}"), steps, window);
            for (i, s) in steps.iter().enumerate() {
                println!(
                    "{label} round {r} step {}: kept partitions' longest pause {:.0} ms, moved partitions' pause {:.0} ms, group stop {:.0} ms",
                    i + 1,
                    s.kept * 1e3,
                    s.moved * 1e3,
                    s.group_stop * 1e3
                );
            }
            all.extend(steps);
        }
        let range = |f: fn(&Step) -> f64| {
            let v: Vec<f64> = all.iter().map(f).collect();
            (
                median(v.iter().copied()) * 1e3,
                v.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
                v.iter().copied().fold(0.0, f64::max) * 1e3,
            )
        };
        let (kept, moved, stop) = (
            range(|s| s.kept),
            range(|s| s.moved),
            range(|s| s.group_stop),
        );
        summary.push(format!(
            "{label}: {} steps, medians (range): kept partitions' pause {:.0} ms ({:.0}–{:.0}), moved partitions' pause {:.0} ms ({:.0}–{:.0}), group stop {:.0} ms ({:.0}–{:.0})",
            all.len(), kept.0, kept.1, kept.2, moved.0, moved.1, moved.2, stop.0, stop.1, stop.2
        ));
    }
    for line in summary {
        println!("{line}");
    }
}
