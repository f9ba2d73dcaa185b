//! The event loop of one simulation run: producer, broker logs, consumers, one clock.
//!
//! Events sit in a binary heap ordered by (time, scheduling sequence), so simultaneous events
//! run in the order they were scheduled and a run is a pure function of its configuration.
//! Only the next arrival is ever in the heap (arrivals are drawn lazily), so the heap holds a
//! handful of events per consumer, not one per record.
//!
//! Records are numbered in arrival order; that number doubles as the consumer's pick order
//! (the released record that arrived first), as the index of per-record state, and as the
//! warm-up cut. Per-key state (sequence numbers, the order checks, producer holds) is indexed
//! by a dense slot given to each distinct key on first sight, so it grows with the keys a run
//! actually draws, never with the configured key space.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::config::{assign, ArrivalProcess, SimConfig};
use super::recovery::{self, Windowing};
use super::report::{infeasible_keys, InfeasibleKey, SimReport};
use crate::protocol::{GateRecord, Migrator, OrderGate, RouteHeader, Step};
use crate::stats::{imbalance, LatencyHistogram};
use crate::strategy::{self, PartitionFeedback, Strategy, StrategyConfig};
use crate::workload::{key_name, Arrival, Schedule, Workload};
use crate::ParamError;

/// ChaCha stream for service times, apart from the workload's key (0) and arrival (1) streams.
const SERVICE_STREAM: u64 = 2;

/// Marks a fence in a partition log, where other entries are record numbers.
const FENCE: u32 = u32::MAX;

/// Watchdog rounds without any progress after which a run that cannot finish stops. Only a
/// protocol bug can cause it (the gate's waits point back in time, so they always resolve);
/// the report then shows `processed < produced` instead of the run spinning forever.
const STALL_ROUNDS: u32 = 4;

/// Runs the simulation of `config` with the strategy named `strategy` and reports what it
/// measured. Errors name the bad parameter (of the configuration or the strategy).
pub fn run(config: &SimConfig, strategy: &str) -> Result<SimReport, ParamError> {
    config.validate()?;
    let strategy_config = StrategyConfig {
        seed: config.seed,
        ..config.strategy
    };
    let strategy = strategy::build_with(strategy, config.partitions, &strategy_config)?;
    let schedule = match config.arrivals {
        ArrivalProcess::Uniform => Schedule::uniform(config.rate)?,
        ArrivalProcess::Poisson => Schedule::poisson(config.rate)?,
    };
    let mut workload = Workload::new(config.key_dist()?, schedule, config.seed);
    if let Some(hot) = config.hot_key()? {
        workload = workload.with_hot_key(hot, config.seed);
    }
    let migrator = if strategy.preserves_order() && config.fencing {
        Some(Migrator::new(config.partitions, strategy_config.hasher)?)
    } else {
        None
    };
    let mut sim = Sim::new(config, strategy, migrator, workload);
    sim.run();
    Ok(sim.report())
}

/// What happens at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The next record of the workload arrives at the producer.
    Arrival,
    /// The delivery report of the fence of key slot `0` arrives: it was written at offset `1`.
    FenceAck(u32, i64),
    /// Consumer `0` finished record `1`.
    ServiceDone(u32, u32),
    /// Consumer `0` commits what its gate allows.
    Commit(u32),
    /// Consumer `0` fetches the committed offsets its parked records wait on.
    BarrierPoll(u32),
    /// Strategies receive per-partition throughput and lag.
    Feedback,
    /// Checks that a run with work left still makes progress.
    Watchdog,
}

/// A scheduled event; the heap pops the earliest, ties in scheduling order.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.total_cmp(&other.at).then(self.seq.cmp(&other.seq))
    }
}

/// One produced record.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// When it arrived at the producer.
    arrival: f64,
    /// When it was appended to its partition (and offered to the consumer).
    appended: f64,
    /// Dense slot of its key.
    key: u32,
    /// Its position among its key's records (arrival order).
    seq: u32,
}

/// Per-key state, indexed by key slot.
#[derive(Debug)]
struct KeyState {
    name: Box<[u8]>,
    /// Sequence number of the key's next record.
    next_seq: u32,
    /// Highest sequence number whose processing started.
    max_started: Option<u32>,
    /// Records of the key being processed right now.
    in_flight: u32,
    /// Records waiting in the producer for the key's fence: (record, partition chosen).
    held: VecDeque<(u32, u32)>,
    /// Records of the key that arrived after warm-up.
    measured: u64,
    /// Arrival time of the first of them (its rate is judged from there on).
    first_measured: Option<f64>,
    /// The recovery window `window_count` belongs to, plus one (0: none yet).
    window: usize,
    /// Records of the key that arrived in that window.
    window_count: u64,
}

/// One window of measured arrivals being filled (see [`recovery`]).
#[derive(Debug)]
struct WindowLoad {
    /// Arrival time of its first record.
    start_s: f64,
    /// Moves decided before its first record was routed.
    moves_before: u64,
    /// Its records appended to each partition.
    loads: Vec<u64>,
    /// Records of its most frequent key.
    hottest: u64,
}

/// One consumer of the group: a single server behind its own order gate.
#[derive(Debug)]
struct Consumer {
    gate: OrderGate,
    partitions: Vec<u32>,
    /// Released records waiting for the server, earliest arrival first: (record, partition,
    /// offset).
    ready: BinaryHeap<Reverse<(u32, u32, i64)>>,
    /// The (partition, offset) being processed.
    busy: Option<(u32, i64)>,
}

/// The whole simulated system.
struct Sim<'c> {
    config: &'c SimConfig,
    strategy: Box<dyn Strategy>,
    migrator: Option<Migrator>,
    workload: Workload,
    service_rng: ChaCha8Rng,
    service_mean: f64,

    now: f64,
    events: BinaryHeap<Reverse<Event>>,
    next_seq: u64,
    /// Arrival, fence-ack and service events in the heap: work that is not a timer.
    work_events: u64,

    records: Vec<Record>,
    keys: Vec<KeyState>,
    slots: FxHashMap<u64, u32>,
    /// Per partition: record numbers (or [`FENCE`]) by offset.
    logs: Vec<Vec<u32>>,
    owner: Vec<u32>,
    /// The group's committed offset per partition.
    committed: Vec<i64>,
    consumers: Vec<Consumer>,

    warmup_records: u64,
    processed: u64,
    last_completion: f64,
    latency: LatencyHistogram,
    parked: LatencyHistogram,
    held_count: u64,
    held_secs: f64,
    partition_load: Vec<u64>,
    migrations: u64,
    /// Moves decided while routing measured records (after warm-up).
    migrations_after_warmup: u64,
    fences: u64,
    violations: u64,
    /// Completions per partition since the last feedback.
    completed_since: Vec<u64>,
    /// Watchdog: (processed, sum of committed offsets) at the last round, and rounds unchanged.
    watch: (u64, i64, u32),
    /// How arrivals are cut into recovery windows.
    windowing: Windowing,
    /// Recovery windows of the measured records, in arrival order.
    windows: Vec<WindowLoad>,
    /// Measured arrivals with which the workload changed shape.
    shifts: Vec<recovery::Event>,
    /// Whether the pending arrival (the last record pushed) changes the workload's shape.
    arrival_shift: bool,
}

impl<'c> Sim<'c> {
    fn new(
        config: &'c SimConfig,
        strategy: Box<dyn Strategy>,
        migrator: Option<Migrator>,
        workload: Workload,
    ) -> Self {
        let mut service_rng = ChaCha8Rng::seed_from_u64(config.seed);
        service_rng.set_stream(SERVICE_STREAM);
        let owned = assign(config.assignor, config.partitions, config.consumers);
        let mut owner = vec![0; config.partitions as usize];
        let consumers = owned
            .into_iter()
            .enumerate()
            .map(|(c, partitions)| {
                let mut gate = OrderGate::new();
                for &p in &partitions {
                    owner[p as usize] = c as u32;
                    gate.assign(p, 0);
                }
                Consumer {
                    gate,
                    partitions,
                    ready: BinaryHeap::new(),
                    busy: None,
                }
            })
            .collect();
        let n = config.records;
        Sim {
            config,
            strategy,
            migrator,
            workload,
            service_rng,
            service_mean: config.mean_service_secs(),
            now: 0.0,
            events: BinaryHeap::new(),
            next_seq: 0,
            work_events: 0,
            records: Vec::with_capacity(n.min(1 << 24) as usize),
            keys: Vec::new(),
            slots: FxHashMap::default(),
            logs: vec![Vec::new(); config.partitions as usize],
            owner,
            committed: vec![0; config.partitions as usize],
            consumers,
            warmup_records: config.warmup_records(),
            processed: 0,
            last_completion: 0.0,
            latency: LatencyHistogram::new(),
            parked: LatencyHistogram::new(),
            held_count: 0,
            held_secs: 0.0,
            partition_load: vec![0; config.partitions as usize],
            migrations: 0,
            migrations_after_warmup: 0,
            fences: 0,
            violations: 0,
            completed_since: vec![0; config.partitions as usize],
            watch: (0, 0, 0),
            windowing: config.windowing(),
            windows: Vec::new(),
            shifts: Vec::new(),
            arrival_shift: false,
        }
    }

    fn schedule(&mut self, at: f64, kind: Kind) {
        if matches!(
            kind,
            Kind::Arrival | Kind::FenceAck(..) | Kind::ServiceDone(..)
        ) {
            self.work_events += 1;
        }
        self.events.push(Reverse(Event {
            at,
            seq: self.next_seq,
            kind,
        }));
        self.next_seq += 1;
    }

    fn run(&mut self) {
        let c = f64::from(self.config.consumers);
        let commit = self.config.commit_interval_ms / 1e3;
        let poll = self.config.barrier_poll_ms / 1e3;
        // Consumers' timers are spread over the interval: real consumers are not in lockstep.
        for i in 0..self.config.consumers {
            let phase = f64::from(i + 1) / c;
            self.schedule(commit * phase, Kind::Commit(i));
            self.schedule(poll * phase, Kind::BarrierPoll(i));
        }
        self.schedule(self.config.feedback_interval_ms / 1e3, Kind::Feedback);
        self.schedule(self.watchdog_interval(), Kind::Watchdog);
        self.schedule_next_arrival();

        while self.processed < self.config.records {
            let Some(Reverse(ev)) = self.events.pop() else {
                break;
            };
            self.now = ev.at;
            match ev.kind {
                Kind::Arrival => {
                    self.work_events -= 1;
                    self.on_arrival();
                }
                Kind::FenceAck(key, offset) => {
                    self.work_events -= 1;
                    self.on_fence_ack(key, offset);
                }
                Kind::ServiceDone(c, rec) => {
                    self.work_events -= 1;
                    self.on_service_done(c, rec);
                }
                Kind::Commit(c) => {
                    self.commit(c);
                    self.schedule(self.now + commit, Kind::Commit(c));
                }
                Kind::BarrierPoll(c) => {
                    self.barrier_poll(c);
                    self.schedule(self.now + poll, Kind::BarrierPoll(c));
                }
                Kind::Feedback => self.feedback(),
                Kind::Watchdog => {
                    if self.stalled() {
                        break;
                    }
                    self.schedule(self.now + self.watchdog_interval(), Kind::Watchdog);
                }
            }
        }
    }

    fn watchdog_interval(&self) -> f64 {
        2.0 * self
            .config
            .commit_interval_ms
            .max(self.config.barrier_poll_ms)
            / 1e3
    }

    /// Whether the run can no longer progress: no work is scheduled and neither processing nor
    /// commits moved for [`STALL_ROUNDS`] watchdog rounds.
    fn stalled(&mut self) -> bool {
        let committed: i64 = self.committed.iter().sum();
        let busy = self.consumers.iter().any(|c| c.busy.is_some());
        if self.work_events > 0
            || busy
            || (self.processed, committed) != (self.watch.0, self.watch.1)
        {
            self.watch = (self.processed, committed, 0);
            return false;
        }
        self.watch.2 += 1;
        self.watch.2 >= STALL_ROUNDS
    }

    // ---- producer ----

    fn schedule_next_arrival(&mut self) {
        if (self.records.len() as u64) < self.config.records {
            if let Some(Arrival { at, key, shift }) = self.workload.next() {
                self.arrival_shift = shift;
                // Stash the key in a record now; `on_arrival` routes it.
                let slot = self.slot(key);
                let ks = &mut self.keys[slot as usize];
                let seq = ks.next_seq;
                ks.next_seq += 1;
                self.records.push(Record {
                    arrival: at,
                    appended: f64::NAN,
                    key: slot,
                    seq,
                });
                self.schedule(at, Kind::Arrival);
            }
        }
    }

    fn slot(&mut self, key: u64) -> u32 {
        let next = self.keys.len() as u32;
        let slot = *self.slots.entry(key).or_insert(next);
        if slot == next {
            self.keys.push(KeyState {
                name: key_name(key).into_bytes().into_boxed_slice(),
                next_seq: 0,
                max_started: None,
                in_flight: 0,
                held: VecDeque::new(),
                measured: 0,
                first_measured: None,
                window: 0,
                window_count: 0,
            });
        }
        slot
    }

    fn on_arrival(&mut self) {
        let rec = (self.records.len() - 1) as u32;
        let key = self.records[rec as usize].key;
        if u64::from(rec) >= self.warmup_records {
            let arrival = self.records[rec as usize].arrival;
            let k = &mut self.keys[key as usize];
            k.measured += 1;
            k.first_measured.get_or_insert(arrival);
        }
        if let Some(w) = self.windowing.of(rec.into()) {
            self.count_in_window(w, rec, key);
        }
        let partition = self.strategy.route(&self.keys[key as usize].name, self.now);
        let moves = self.strategy.drain_moves().len() as u64;
        self.migrations += moves;
        if u64::from(rec) >= self.warmup_records {
            self.migrations_after_warmup += moves;
        }
        if self.migrator.is_none() {
            self.append(partition, rec, None);
        } else if !self.keys[key as usize].held.is_empty() {
            // A fence of this key is in flight: queue behind the records already waiting.
            self.keys[key as usize].held.push_back((rec, partition));
        } else {
            self.keys[key as usize].held.push_back((rec, partition));
            self.offer_held(key);
        }
        self.schedule_next_arrival();
    }

    /// Counts record `rec` of key slot `key` in its recovery window `w` (opening the window
    /// with its first record), and notes it as an event if the workload changed shape with
    /// it. Called before the record is routed, so moves it triggers count after.
    fn count_in_window(&mut self, w: usize, rec: u32, key: u32) {
        if w == self.windows.len() {
            self.windows.push(WindowLoad {
                start_s: self.now,
                moves_before: self.migrations,
                loads: vec![0; self.config.partitions as usize],
                hottest: 0,
            });
        }
        let ks = &mut self.keys[key as usize];
        if ks.window != w + 1 {
            ks.window = w + 1;
            ks.window_count = 0;
        }
        ks.window_count += 1;
        let window = &mut self.windows[w];
        window.hottest = window.hottest.max(ks.window_count);
        if std::mem::take(&mut self.arrival_shift) {
            self.shifts.push(recovery::Event {
                at_s: self.now,
                moves_before: self.migrations,
                first_window: self.windowing.first_from(rec.into()),
            });
        }
    }

    /// Offers the key's held records to the migrator in order until one must wait.
    fn offer_held(&mut self, key: u32) {
        while let Some(&(rec, partition)) = self.keys[key as usize].held.front() {
            let migrator = self
                .migrator
                .as_mut()
                .expect("only ordered strategies hold");
            match migrator.on_record(&self.keys[key as usize].name, partition) {
                Step::Send { partition, header } => {
                    self.keys[key as usize].held.pop_front();
                    let waited = self.now - self.records[rec as usize].arrival;
                    if waited > 0.0 {
                        self.held_count += 1;
                        self.held_secs += waited;
                    }
                    self.append(partition, rec, header);
                }
                Step::Fence {
                    fence_partition,
                    route,
                    ..
                } => {
                    let offset = self.append_fence(fence_partition, key, route);
                    self.fences += 1;
                    self.schedule(
                        self.now + self.config.fence_rtt_ms / 1e3,
                        Kind::FenceAck(key, offset),
                    );
                    return;
                }
                Step::Hold => return,
            }
        }
    }

    fn on_fence_ack(&mut self, key: u32, offset: i64) {
        let migrator = self
            .migrator
            .as_mut()
            .expect("only ordered strategies fence");
        migrator.fence_acked(&self.keys[key as usize].name, offset);
        self.offer_held(key);
    }

    // ---- broker ----

    fn append(&mut self, partition: u32, rec: u32, route: Option<RouteHeader>) {
        let log = &mut self.logs[partition as usize];
        let offset = log.len() as i64;
        log.push(rec);
        let r = &mut self.records[rec as usize];
        r.appended = self.now;
        if u64::from(rec) >= self.warmup_records {
            self.partition_load[partition as usize] += 1;
        }
        if let Some(w) = self.windowing.of(rec.into()) {
            self.windows[w].loads[partition as usize] += 1;
        }
        let key = self.keys[r.key as usize].name.clone();
        self.deliver(partition, offset, key, route, false);
    }

    fn append_fence(&mut self, partition: u32, key: u32, route: Option<RouteHeader>) -> i64 {
        let log = &mut self.logs[partition as usize];
        let offset = log.len() as i64;
        log.push(FENCE);
        let name = self.keys[key as usize].name.clone();
        self.deliver(partition, offset, name, route, true);
        offset
    }

    /// Hands an appended entry to the partition's consumer at once (fetch latency is not
    /// modelled: it would shift every strategy's latency alike).
    fn deliver(
        &mut self,
        partition: u32,
        offset: i64,
        key: Box<[u8]>,
        route: Option<RouteHeader>,
        fence: bool,
    ) {
        let c = self.owner[partition as usize];
        self.consumers[c as usize].gate.offer(GateRecord {
            partition,
            offset,
            key: Some(key),
            route,
            fence,
        });
        self.after_gate(c);
    }

    // ---- consumers ----

    /// Collects what the consumer's gate released or passed, then keeps the server busy.
    fn after_gate(&mut self, c: u32) {
        let consumer = &mut self.consumers[c as usize];
        loop {
            while let Some(r) = consumer.gate.poll() {
                let rec = self.logs[r.partition as usize][r.offset as usize];
                if r.parked {
                    let record = &self.records[rec as usize];
                    self.parked.record_secs(self.now - record.appended);
                }
                consumer.ready.push(Reverse((rec, r.partition, r.offset)));
            }
            // A passed fence moves its partition's commit offset: commit at once so the key's
            // parked records elsewhere wait as little as possible. The commit, reported to the
            // gate, may release records here too.
            let Some(f) = consumer.gate.poll_fence() else {
                break;
            };
            if let Some(o) = consumer.gate.commit_offset(f.partition) {
                let committed = &mut self.committed[f.partition as usize];
                *committed = (*committed).max(o);
                consumer.gate.observe_committed(f.partition, *committed);
            }
        }
        if consumer.busy.is_none() {
            self.start_next(c);
        }
    }

    fn start_next(&mut self, c: u32) {
        let consumer = &mut self.consumers[c as usize];
        let Some(Reverse((rec, partition, offset))) = consumer.ready.pop() else {
            return;
        };
        consumer.busy = Some((partition, offset));
        let record = self.records[rec as usize];
        let key = &mut self.keys[record.key as usize];
        // Out of order: a later record of the key already started, or an earlier one is
        // still being processed elsewhere.
        if key.max_started.is_some_and(|m| m > record.seq) || key.in_flight > 0 {
            self.violations += 1;
        }
        key.max_started = Some(key.max_started.map_or(record.seq, |m| m.max(record.seq)));
        key.in_flight += 1;
        let service = self
            .config
            .service
            .sample(self.service_mean, &mut self.service_rng);
        self.schedule(self.now + service, Kind::ServiceDone(c, rec));
    }

    fn on_service_done(&mut self, c: u32, rec: u32) {
        let consumer = &mut self.consumers[c as usize];
        let (partition, offset) = consumer.busy.take().expect("a busy consumer finished");
        consumer.gate.processed(partition, offset);
        let record = self.records[rec as usize];
        self.keys[record.key as usize].in_flight -= 1;
        self.processed += 1;
        self.completed_since[partition as usize] += 1;
        self.last_completion = self.now;
        if u64::from(rec) >= self.warmup_records {
            self.latency.record_secs(self.now - record.arrival);
        }
        self.after_gate(c);
    }

    fn commit(&mut self, c: u32) {
        let consumer = &mut self.consumers[c as usize];
        for &p in &consumer.partitions {
            if let Some(o) = consumer.gate.commit_offset(p) {
                let committed = &mut self.committed[p as usize];
                *committed = (*committed).max(o);
                consumer.gate.observe_committed(p, *committed);
            }
        }
        self.after_gate(c);
    }

    fn barrier_poll(&mut self, c: u32) {
        let consumer = &mut self.consumers[c as usize];
        let barriers = consumer.gate.barriers();
        if barriers.is_empty() {
            return;
        }
        for (a, _) in barriers {
            consumer
                .gate
                .observe_committed(a, self.committed[a as usize]);
        }
        self.after_gate(c);
    }

    fn feedback(&mut self) {
        let interval = self.config.feedback_interval_ms / 1e3;
        let feedback: Vec<PartitionFeedback> = (0..self.config.partitions)
            .map(|p| PartitionFeedback {
                partition: p,
                throughput_rps: self.completed_since[p as usize] as f64 / interval,
                lag: (self.logs[p as usize].len() as i64 - self.committed[p as usize]).max(0)
                    as u64,
            })
            .collect();
        self.completed_since.iter_mut().for_each(|n| *n = 0);
        self.strategy.observe(&feedback, self.now);
        // After the last arrival nothing is routed any more: feedback would change nothing.
        if (self.records.len() as u64) < self.config.records {
            self.schedule(self.now + interval, Kind::Feedback);
        }
    }

    // ---- report ----

    /// Seconds between the first and the last arrival of the measured records.
    fn measured_span(&self) -> f64 {
        let first = self.records.get(self.warmup_records as usize);
        match (first, self.records.last()) {
            (Some(a), Some(b)) => (b.arrival - a.arrival).max(0.0),
            _ => 0.0,
        }
    }

    /// Disturbances and recoveries over the complete windows (a last, partial one would read
    /// noisier than the rest and is left out).
    fn recovery(&self) -> recovery::Recovery {
        let complete = self.windowing.complete(self.records.len() as u64);
        let windows: Vec<recovery::Window> = self.windows[..complete]
            .iter()
            .map(|w| recovery::Window {
                start_s: w.start_s,
                moves_before: w.moves_before,
                max_over_bound: imbalance(&w.loads, w.hottest).max_over_bound,
            })
            .collect();
        recovery::recovery(&windows, &self.shifts, self.windowing.size)
    }

    fn report(&self) -> SimReport {
        let hottest = self.keys.iter().map(|k| k.measured).max().unwrap_or(0);
        let span = self.measured_span();
        let end = self.records.last().map_or(0.0, |r| r.arrival);
        let infeasible_keys = infeasible_keys(
            self.keys.iter().filter_map(|k| {
                let first = k.first_measured?;
                Some((&k.name[..], k.measured, end - first))
            }),
            self.service_mean,
        );
        let imb = imbalance(&self.partition_load, hottest);
        let first_arrival = self.records.first().map_or(0.0, |r| r.arrival);
        let duration = (self.last_completion - first_arrival).max(0.0);
        SimReport {
            strategy: self.strategy.name().to_string(),
            preserves_order: self.strategy.preserves_order(),
            utilization: self.config.utilization,
            service_ms: self.service_mean * 1e3,
            produced: self.records.len() as u64,
            processed: self.processed,
            duration_s: duration,
            throughput_rps: if duration > 0.0 {
                self.processed as f64 / duration
            } else {
                0.0
            },
            measured: self.latency.len(),
            p50_ms: self.latency.quantile_ms(0.5),
            p99_ms: self.latency.quantile_ms(0.99),
            p999_ms: self.latency.quantile_ms(0.999),
            max_ms: self.latency.max_ms(),
            mean_ms: self.latency.mean_ms(),
            partition_load: self.partition_load.clone(),
            hottest_key_records: hottest,
            imbalance_max_over_mean: imb.max_over_mean,
            imbalance_max_over_bound: imb.max_over_bound,
            migrations: self.migrations,
            migrations_after_warmup: self.migrations_after_warmup,
            migrations_per_minute_after_warmup: if span > 0.0 {
                self.migrations_after_warmup as f64 * 60.0 / span
            } else {
                0.0
            },
            fences: self.fences,
            order_violations: self.violations,
            producer_held: self.held_count,
            producer_held_ms: self.held_secs * 1e3,
            parked_records: self.parked.len(),
            parked_ms: self.parked.total_ms(),
            parked_p99_ms: self.parked.quantile_ms(0.99),
            parked_max_ms: self.parked.max_ms(),
            warnings: infeasible_keys.iter().map(InfeasibleKey::warning).collect(),
            infeasible_keys,
            recovery: self.recovery(),
        }
    }
}
