//! Cost of `keyshift worker --forward`'s dispatch: records fed from memory to [`HttpForward`]
//! with up to 32 requests in flight (the worker's slots), against a trivial HTTP/1.1 handler in
//! the same process (it reads each request and answers 200 with no body), so what is measured
//! is keyshift's side — the record's JSON body, the pooled keep-alive request, the answer —
//! not a broker or an application.
//!
//! Run with `cargo bench -p keyshift-kafka --bench forward` (env: `KEYSHIFT_BENCH_ROUNDS`,
//! default 5; `KEYSHIFT_BENCH_RECORDS`, default 20 000; `KEYSHIFT_BENCH_CONCURRENCY`, default
//! 32). Each round prints records/s and the per-record latency (handle() called → answer read)
//! p50 and p99; the medians over rounds and their range follow. Under `cargo test
//! --all-targets` it runs one small round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyshift_core::stats::LatencyHistogram;
use keyshift_kafka::bench::env_or;
use keyshift_kafka::{AsyncRecordHandler, DeliveredRecord, HttpForward};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Answers every request on a connection with an empty 200, keeping it alive.
async fn trivial_handler(listener: TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let (read, mut write) = socket.into_split();
            let mut read = BufReader::new(read);
            let mut line = String::new();
            loop {
                let mut length = 0usize;
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let header = line.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if read.read_exact(&mut body).await.is_err() {
                    return;
                }
                if write
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn record(i: usize, keys: usize) -> DeliveredRecord {
    DeliveredRecord {
        partition: (i % 8) as u32,
        offset: i as i64,
        key: Some(format!("key-{}", i % keys).into_bytes()),
        value: vec![b'x'; 100],
        headers: vec![(
            "traceparent".into(),
            Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        )],
        timestamp_ms: Some(1_764_806_400_000),
        route: None,
        parked: false,
        order_exception: false,
        park_time: Duration::ZERO,
        fetched_at: Instant::now(),
        assignment: 1,
        unordered: false,
        probe: None,
        verdict: None,
    }
}

/// One round: `records` records through `forward`, `concurrency` at once. Returns records/s
/// and the latency distribution.
async fn round(
    forward: &HttpForward,
    records: usize,
    concurrency: usize,
) -> (f64, LatencyHistogram) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let latencies = Arc::new(std::sync::Mutex::new(LatencyHistogram::default()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(records);
    for i in 0..records {
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let sent = Instant::now();
        let request = forward.handle(record(i, 1000));
        let latencies = Arc::clone(&latencies);
        tasks.push(tokio::spawn(async move {
            request.await.expect("the trivial handler answers 200");
            latencies
                .lock()
                .unwrap()
                .record_secs(sent.elapsed().as_secs_f64());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = records as f64 / start.elapsed().as_secs_f64();
    let hist = latencies.lock().unwrap().clone();
    (rate, hist)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (rounds, records, concurrency) = if smoke {
        (1, 200, 8)
    } else {
        (
            env_or("KEYSHIFT_BENCH_ROUNDS", 5),
            env_or("KEYSHIFT_BENCH_RECORDS", 20_000),
            env_or("KEYSHIFT_BENCH_CONCURRENCY", 32),
        )
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/records", listener.local_addr().unwrap());
        tokio::spawn(trivial_handler(listener));
        let forward = HttpForward::new(&url, "bench", Duration::from_secs(30)).unwrap();
        // Warm the connection pool.
        round(&forward, concurrency * 4, concurrency).await;
        let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for r in 1..=rounds {
            let (rate, hist) = round(&forward, records, concurrency).await;
            let (p50, p99) = (hist.quantile_ms(0.5), hist.quantile_ms(0.99));
            println!(
                "round {r}: {records} records, {concurrency} in flight: {rate:.0} records/s, latency p50 {p50:.2} ms, p99 {p99:.2} ms"
            );
            rates.push(rate);
            p50s.push(p50);
            p99s.push(p99);
        }
        let range = |v: &[f64]| {
            (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            )
        };
        let ((r0, r1), (a0, a1), (b0, b1)) = (range(&rates), range(&p50s), range(&p99s));
        println!(
            "median over {rounds} rounds: {:.0} records/s ({r0:.0}-{r1:.0}), p50 {:.2} ms ({a0:.2}-{a1:.2}), p99 {:.2} ms ({b0:.2}-{b1:.2})",
            median(rates.clone()),
            median(p50s.clone()),
            median(p99s.clone()),
        );
    });
}
