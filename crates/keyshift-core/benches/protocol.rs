//! Cost per record of the migration protocol: header codec, the producer-side `Migrator`, and
//! the consumer-side `OrderGate` (offer → poll → processed) with and without parked keys.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keyshift_core::hash::Hasher;
use keyshift_core::protocol::{GateRecord, Migrator, OrderGate, RouteHeader};

const RECORDS: usize = 10_000;

fn keys(n: usize) -> Vec<Box<[u8]>> {
    (0..n)
        .map(|k| format!("location_{k}").into_bytes().into_boxed_slice())
        .collect()
}

fn header(c: &mut Criterion) {
    let h = RouteHeader::new(3, 7, 1_500_000).unwrap();
    let bytes = h.encode();
    let mut g = c.benchmark_group("protocol/header");
    g.throughput(Throughput::Elements(1));
    g.bench_function("route_encode_into", |b| {
        let mut buf = Vec::with_capacity(32);
        b.iter(|| {
            buf.clear();
            black_box(h).encode_into(&mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("route_decode", |b| {
        b.iter(|| RouteHeader::decode(black_box(&bytes)))
    });
    g.finish();
}

fn migrator(c: &mut Criterion) {
    let keys = keys(2800);
    let mut g = c.benchmark_group("protocol/migrator");
    g.throughput(Throughput::Elements(RECORDS as u64));
    // Cold traffic: every key at home, the common case the producer pays on every record.
    g.bench_function("on_record_home", |b| {
        let mut m = Migrator::new(8, Hasher::Murmur2).unwrap();
        let homes: Vec<u32> = keys.iter().map(|k| m.home(k)).collect();
        b.iter(|| {
            for i in 0..RECORDS {
                let k = i % keys.len();
                black_box(m.on_record(&keys[k], homes[k]));
            }
        })
    });
    g.finish();
}

/// Records on 4 partitions; with `moved`, key 0..moved arrive routed from partition 3 and are
/// parked until the barrier is observed halfway through.
fn gate_records(keys: &[Box<[u8]>], moved: usize) -> Vec<GateRecord> {
    (0..RECORDS)
        .map(|i| {
            let k = i % keys.len();
            let partition = (k % 3) as u32;
            GateRecord {
                partition,
                offset: (i / 3) as i64,
                key: Some(keys[k].clone()),
                route: (k < moved).then(|| RouteHeader::new(1, 3, 100).unwrap()),
                fence: false,
            }
        })
        .collect()
}

fn run_gate(records: Vec<GateRecord>) -> usize {
    let mut g = OrderGate::new();
    for p in 0..3 {
        g.assign(p, 0);
    }
    let half = records.len() / 2;
    let mut done = 0;
    for (i, r) in records.into_iter().enumerate() {
        if i == half {
            g.observe_committed(3, 101);
        }
        g.offer(r);
        while let Some(rel) = g.poll() {
            g.processed(rel.partition, rel.offset);
            done += 1;
        }
    }
    done
}

fn gate(c: &mut Criterion) {
    let keys = keys(2800);
    let mut g = c.benchmark_group("protocol/gate");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, moved) in [("no_migration", 0), ("100_keys_parked", 100)] {
        let records = gate_records(&keys, moved);
        g.bench_function(name, |b| {
            b.iter_batched(|| records.clone(), run_gate, BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group!(benches, header, migrator, gate);
criterion_main!(benches);
