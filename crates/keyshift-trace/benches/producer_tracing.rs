//! What tracing costs the producer: the keyshift producer with tracing off, on at sampling
//! ratio 0.01, and on at 1.0 — same broker, same run, alternating.
//!
//! Run with `cargo bench -p keyshift-trace --bench producer_tracing` (env vars:
//! `KEYSHIFT_BENCH_RECORDS` per round, default 20000; `KEYSHIFT_BENCH_ROUNDS`, default 5).
//!
//! Each round sends the same Zipf key stream (s = 1.1, v = 2.72, 2800 keys) of ~100-byte
//! records through a `hash` producer per variant and awaits every delivery, then flushes the
//! tracer (so the batch exporter's work is inside the measurement). Spans go over OTLP/HTTP to
//! a real receiver that decodes them. The embedded broker (tansu on sqlite, ~20 k records/s)
//! and the receiver run in a *child process*, so the CPU time measured here (getrusage of
//! this process: librdkafka, routing, span creation, header injection, batching, protobuf
//! encoding, HTTP export) is the producer's alone; wall-clock throughput is bounded by the
//! broker, so CPU per record is the figure that isolates the overhead. Per variant it prints
//! the median over the rounds with the run-to-run spread `[min–max]`, and the ratio to `off`
//! of the same round (the variants alternate inside a round) as median `[min–max]` over the
//! rounds; the tracer's own CPU per record (`on, ratio 0.01` minus `off + header`, which carry
//! the same header) likewise; then every round's raw values.

#[path = "../tests/otlp_receiver/mod.rs"]
mod otlp_receiver;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyshift_kafka::bench::{cpu_time, env_or, median, zipf_keys};
use keyshift_kafka::{Admin, ClientSettings, EmbeddedBroker, KeyshiftProducer, PendingDelivery};
use keyshift_trace::{Protocol, TraceConfig, Tracing};

const PARTITIONS: u32 = 8;
const VALUE_BYTES: usize = 100;
const CHILD_ENV: &str = "KEYSHIFT_BENCH_BROKER_CHILD";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return run_child();
    }
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run only.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let records = if smoke {
        300
    } else {
        env_or("KEYSHIFT_BENCH_RECORDS", 20_000)
    };
    let rounds = if smoke {
        1
    } else {
        env_or("KEYSHIFT_BENCH_ROUNDS", 5)
    };
    let (bootstrap, traces_url, mut child) = spawn_child();
    let settings = ClientSettings::new(bootstrap).client_id("keyshift-bench");
    let admin = Admin::new(&settings).expect("admin client");
    let keys = zipf_keys(records);
    let value = vec![b'v'; VALUE_BYTES];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // "off + header": tracing off, but every record carries a constant 55-byte traceparent
    // from the caller — what carrying the context costs librdkafka and the broker, apart from
    // the tracer.
    let variants: [(&str, Option<f64>); 4] = [
        ("off", None),
        ("off + header", None),
        ("on, ratio 0.01", Some(0.01)),
        ("on, ratio 1.0", Some(1.0)),
    ];
    // One provider per traced variant for the whole run, as a process would have one.
    let tracers: Vec<Option<Tracing>> = variants
        .iter()
        .map(|(_, ratio)| {
            ratio.map(|r| {
                let mut c = TraceConfig::new("keyshift-bench").sample_ratio(r).unwrap();
                c.protocol = Protocol::HttpProtobuf;
                c.endpoint = Some(traces_url.clone());
                Tracing::new(&c).expect("tracer")
            })
        })
        .collect();
    println!(
        "producer tracing cost: {records} records of {VALUE_BYTES} B per round, {rounds} rounds \
         (+1 warm-up), {PARTITIONS} partitions, strategy hash, OTLP/HTTP export"
    );
    let stamp = std::process::id();
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            let topic = format!("trace-bench-{stamp}-{round}-{v}");
            admin.create_topic(&topic, PARTITIONS).expect("topic");
            let sample = runtime.block_on(run_variant(
                tracers[v].as_ref(),
                variants[v].0 == "off + header",
                &settings,
                &topic,
                &keys,
                &value,
            ));
            if round > 0 {
                results[v].push(sample);
            }
        }
    }
    println!(
        "{:<16} {:>20} {:>20} {:>20} {:>20}",
        "tracing", "records/s", "vs off", "cpu µs/rec", "vs off"
    );
    for (v, (name, _)) in variants.iter().enumerate() {
        let paired = |f: fn(&Sample) -> f64| -> Vec<f64> {
            results[v]
                .iter()
                .zip(&results[0])
                .map(|(s, off)| f(s) / f(off))
                .collect()
        };
        let rate = |s: &Sample| s.rate;
        let cpu = |s: &Sample| s.cpu_us_per_record;
        println!(
            "{name:<16} {:>20} {:>20} {:>20} {:>20}",
            spread(results[v].iter().map(rate), 0),
            spread(paired(rate), 3),
            spread(results[v].iter().map(cpu), 2),
            spread(paired(cpu), 3),
        );
    }
    // The tracer apart from carrying the header: both variants send the same 55-byte header.
    let (header, sampled) = (1, 2);
    let tracer_alone = results[sampled]
        .iter()
        .zip(&results[header])
        .map(|(on, off)| on.cpu_us_per_record - off.cpu_us_per_record);
    println!(
        "tracer alone ({} − {}, same round): cpu µs/rec {}",
        variants[sampled].0,
        variants[header].0,
        spread(tracer_alone, 2)
    );
    for (v, (name, _)) in variants.iter().enumerate() {
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
    drop(tracers);
    println!(
        "(the SDK drops spans beyond its batch queue, OTEL_BSP_MAX_QUEUE_SIZE = 2048 by \
         default; the receiver's total follows)"
    );
    // Closing its stdin tells the child to stop.
    drop(child.stdin.take());
    let _ = child.wait();
}

/// `median [min–max]` of `values`, with `decimals` decimals.
fn spread(values: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    let values: Vec<f64> = values.into_iter().collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let median = median(values);
    format!("{median:.decimals$} [{min:.decimals$}–{max:.decimals$}]")
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_us_per_record: f64,
}

async fn run_variant(
    tracing: Option<&Tracing>,
    constant_header: bool,
    settings: &ClientSettings,
    topic: &str,
    keys: &[Vec<u8>],
    value: &[u8],
) -> Sample {
    let mut builder = KeyshiftProducer::builder(settings.clone(), topic)
        .strategy("hash")
        .partitions(PARTITIONS);
    if let Some(t) = tracing {
        builder = builder.tracing(t.clone());
    }
    let producer = builder.build().expect("producer");
    let start = Instant::now();
    let cpu0 = cpu_time();
    let header = || {
        if constant_header {
            vec![(
                "traceparent".to_owned(),
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".to_vec(),
            )]
        } else {
            Vec::new()
        }
    };
    let mut pending: Vec<PendingDelivery> = Vec::with_capacity(keys.len());
    for key in keys {
        loop {
            match producer.try_send(key, value, header()) {
                Ok(p) => break pending.push(p),
                Err(keyshift_kafka::ProduceError::QueueFull { .. }) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => panic!("send failed: {err}"),
            }
        }
    }
    for p in pending {
        p.await.expect("delivered");
    }
    if let Some(t) = tracing {
        // The export of this round's spans belongs to its cost.
        tokio::task::block_in_place(|| t.flush());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    Sample {
        rate: keys.len() as f64 / elapsed,
        cpu_us_per_record: cpu.as_secs_f64() * 1e6 / keys.len() as f64,
    }
}

/// Starts this binary again as the broker + receiver process; reads its two addresses.
fn spawn_child() -> (String, String, Child) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    let bootstrap = lines.next().expect("bootstrap line").expect("read");
    let traces_url = lines.next().expect("receiver line").expect("read");
    (bootstrap, traces_url, child)
}

/// The child: an embedded broker and an OTLP/HTTP receiver until stdin closes; prints how
/// many spans it received.
fn run_child() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let (url, spans) = otlp_receiver::start_http();
    let mut out = std::io::stdout();
    writeln!(out, "{}\n{url}", broker.bootstrap_servers()).expect("stdout");
    out.flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    // stderr: the parent stopped reading stdout after the two address lines.
    eprintln!(
        "OTLP receiver got {} spans in total",
        spans.snapshot().len()
    );
    broker.shutdown();
}
