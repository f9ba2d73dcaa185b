//! Durable routes across producer crashes (issue 11's restart scenario), with real processes:
//! the embedded broker in this process, `keyshift gateway` as a child fed with skewed load,
//! killed with `kill -9` twice while it has keys moved away, restarted each time — once as
//! `--strategy hash` (a rollback: every key goes home), then as `--strategy keyshift` again;
//! then one `keyshift worker` that owns every partition consumes the whole backlog and checks
//! each key's probe sequence numbers.
//!
//! Two checks: the worker's sequence check, and a check of the log itself — for every two
//! consecutive records of a key, the later one must be ordered after the earlier one by what
//! an ordered consumer obeys (per-key FIFO inside a partition; a route header `{from A, fence
//! f}` orders a record after everything of its key on A up to `f`; transitively). The log check
//! does not depend on how the worker happened to interleave partitions.
//!
//! With durable routes (the default) a restarted gateway continues every moved key's set and
//! fences it before sending it home, even as a hash producer: both checks see 0. The same run
//! with `--routes ephemeral` (the negative control) sends moved keys home bare after the
//! rollback restart, while their older records sit on the other partition: the log check sees
//! unordered pairs (the worker sees violations only when it happens to process the newer
//! records first).

mod gateway_support;
mod process_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gateway_support::{
    broker_with_topic, keyshift, parse_metrics, read_all, runtime, GatewayProcess, Rec, PATIENCE,
};
use keyshift_core::probe::Probe;
use process_support::{http_addr, http_get, signal_and_wait};
use serde_json::{json, Value};

const PARTITIONS: u32 = 6;
const KEYS: usize = 40;
const BATCH: usize = 40;

/// Fast-moving keyshift settings so that keys move within a second of load. Batches are
/// answered once acknowledged (no `--no-wait`): a kill -9 between batches then loses nothing,
/// so every moved key's records on its new partition are in the log the check reads.
const GATEWAY_FLAGS: &[&str] = &[
    "--strategy",
    "keyshift",
    "--keyshift-warmup",
    "0.3",
    "--keyshift-rebalance-interval",
    "0.2",
    "--keyshift-half-life",
    "1",
    "--keyshift-cooldown",
    "0.5",
];

/// Skewed keys: key k gets weight 1/(k+1)^1.1, drawn from a fixed xorshift stream; `shift`
/// renames them (key k is sent as key k + shift, modulo n), so other keys turn hot; `base`
/// offsets every name (key k is `location_{base + k}`), for keys never sent before.
struct Keys {
    n: usize,
    cumulative: Vec<f64>,
    state: u64,
    shift: usize,
    base: usize,
}

impl Keys {
    fn new() -> Self {
        Self::zipf(KEYS, 1.1)
    }

    /// `n` keys, key k with weight 1/(k+1)^`s`.
    fn zipf(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Keys {
            n,
            cumulative,
            state: 0x9e37_79b9_7f4a_7c15,
            shift: 0,
            base: 0,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let total = *self.cumulative.last().unwrap();
        let x = (self.state >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.base
            + (self.cumulative.partition_point(|&c| c < x).min(self.n - 1) + self.shift) % self.n
    }

    /// The same keys named from `base` on.
    fn named_from(mut self, base: usize) -> Self {
        self.base = base;
        self
    }
}

/// Scenarios of this file run one at a time. Each runs a broker, up to three gateways, a
/// worker and the load; two at once on a 2-core machine (the tests of one binary run in
/// parallel) stretched produce round trips enough that, once in a full run, records a stopped
/// replica had already handed to librdkafka landed after the other replicas' fences — the
/// limit docs/routing.md states for a zombie producer, made likely by the load, not by the
/// protocol under test.
static ONE_SCENARIO: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    ONE_SCENARIO.lock().unwrap_or_else(|p| p.into_inner())
}

fn metric(base: &str, name: &str) -> f64 {
    let addr = base.trim_start_matches("http://");
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains("200"), "GET /metrics: {status}");
    parse_metrics(&body).get(name).copied().unwrap_or(0.0)
}

/// One batch of `BATCH` skewed probe records.
fn build_batch(keys: &mut Keys, seqs: &mut [u64]) -> Vec<Value> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    (0..BATCH)
        .map(|_| {
            let k = keys.next();
            let probe = Probe {
                seq: seqs[k],
                sent_us: now_us,
                body: String::new(),
            };
            seqs[k] += 1;
            json!({
                "key": format!("location_{k}"),
                "body": String::from_utf8(probe.encode()).unwrap(),
            })
        })
        .collect()
}

/// Posts one batch of `BATCH` skewed probe records to the gateway.
fn send_batch(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    gw: &GatewayProcess,
    keys: &mut Keys,
    seqs: &mut [u64],
) {
    let batch = build_batch(keys, seqs);
    let status = rt.block_on(async {
        client
            .post(format!("{}/batch", gw.base))
            .json(&batch)
            .send()
            .await
            .expect("POST /batch")
            .status()
    });
    assert!(status.is_success(), "POST /batch answered {status}");
}

/// What every scenario needs: a fresh broker with its topic, and an HTTP client.
struct Setup {
    broker: keyshift_kafka::EmbeddedBroker,
    bootstrap: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Setup {
    fn new(topic: &str) -> Self {
        let broker = broker_with_topic(topic, PARTITIONS);
        let bootstrap = broker.bootstrap_servers().to_owned();
        Setup {
            broker,
            bootstrap,
            rt: runtime(),
            client: reqwest::Client::new(),
        }
    }

    /// Posts `batches` batches, each to one of `gateways` picked by `spread`.
    fn spread(
        &self,
        spread: &mut Spread,
        gateways: &[&GatewayProcess],
        batches: usize,
        keys: &mut Keys,
        seqs: &mut [u64],
    ) {
        for _ in 0..batches {
            let gw = gateways[spread.pick(gateways.len())];
            send_batch(&self.rt, &self.client, gw, keys, seqs);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Which replica gets the next batch: a fixed xorshift stream, so runs repeat.
struct Spread(u64);

impl Spread {
    fn new() -> Self {
        Spread(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Member timeout of coordinated gateways here, in seconds: a silent member is forgotten ten
/// of them later ([`FORGET_SECS`]), which is when moves resume after a crash or a stop.
const MEMBER_TIMEOUT: &str = "2";
const FORGET_SECS: u64 = 20;

/// A pause between the batches of a loop that waits out the forget horizon. Unpaced, such a
/// loop wrote about 40 000 records in its 20 s, which the debug-built embedded broker could
/// not read back within [`PATIENCE`] on a 2-core machine; paced, the keys still turn hot
/// within a rate half-life.
fn pace() {
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// The flags of a fast-moving keyshift gateway with `--routes routes`.
fn keyshift_flags(routes: &str) -> Vec<&str> {
    let coordinated: &[&str] = if routes == "coordinated" {
        &["--coordination-member-timeout", MEMBER_TIMEOUT]
    } else {
        &[]
    };
    GATEWAY_FLAGS
        .iter()
        .copied()
        .chain(["--routes", routes])
        .chain(coordinated.iter().copied())
        .collect()
}

/// Sends batches until the gateway has completed migrations and keys are away from home, and
/// at least `min_batches` were sent; returns the gateway's routed-key count when stopping.
fn load_until_moved(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    gw: &GatewayProcess,
    keys: &mut Keys,
    seqs: &mut [u64],
    min_batches: usize,
    durable: bool,
) -> f64 {
    let deadline = Instant::now() + PATIENCE;
    let start_migrations = metric(&gw.base, "keyshift_producer_migrations_total");
    for sent in 0.. {
        assert!(
            Instant::now() < deadline,
            "the gateway moved no key within {PATIENCE:?}"
        );
        send_batch(rt, client, gw, keys, seqs);
        if sent >= min_batches {
            let moved = metric(&gw.base, "keyshift_producer_migrations_total") > start_migrations;
            let routed = metric(&gw.base, "keyshift_producer_routed_keys");
            // Durable: a moved key's route is on record (ephemeral gateways write none).
            let recorded =
                !durable || metric(&gw.base, "keyshift_producer_route_writes_total") > 0.0;
            if moved && routed > 0.0 && recorded {
                return routed;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unreachable!()
}

/// Sends `batches` batches of skewed load (no waiting for moves).
fn load_batches(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    gw: &GatewayProcess,
    keys: &mut Keys,
    seqs: &mut [u64],
    batches: usize,
) {
    for _ in 0..batches {
        send_batch(rt, client, gw, keys, seqs);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Pairs of consecutive probe records of a key (by sequence number) whose order nothing in the
/// log enforces; see the module docs.
fn unordered_pairs(records: &[Rec]) -> Vec<String> {
    use std::collections::{BTreeMap, HashMap};
    // Per key: its records (probes and fences) by (partition, offset).
    let mut by_key: HashMap<&str, BTreeMap<(u32, i64), &Rec>> = HashMap::new();
    for r in records {
        by_key
            .entry(&r.key)
            .or_default()
            .insert((r.partition, r.offset), r);
    }
    let mut out = Vec::new();
    for (key, recs) in &by_key {
        // before[r] = per partition, the highest offset of the key's records there that an
        // ordered consumer must finish before r (closed transitively, in log order per
        // partition, with memoised lookups across partitions).
        let mut memo: HashMap<(u32, i64), HashMap<u32, i64>> = HashMap::new();
        fn before(
            at: (u32, i64),
            recs: &BTreeMap<(u32, i64), &Rec>,
            memo: &mut HashMap<(u32, i64), HashMap<u32, i64>>,
        ) -> HashMap<u32, i64> {
            if let Some(b) = memo.get(&at) {
                return b.clone();
            }
            let mut b: HashMap<u32, i64> = HashMap::new();
            let merge = |b: &mut HashMap<u32, i64>, other: HashMap<u32, i64>| {
                for (p, o) in other {
                    let e = b.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            };
            // The key's previous record on the same partition, and what it waits for.
            if let Some((&prev, _)) = recs.range((at.0, i64::MIN)..at).next_back() {
                merge(&mut b, HashMap::from([(prev.0, prev.1)]));
                merge(&mut b, before(prev, recs, memo));
            }
            // A route header: everything of the key on A up to the fence.
            if let Some(route) = recs[&at].route {
                let a = route.from_partition;
                let upto = (a, route.fence_offset);
                if let Some((&last, _)) = recs.range((a, i64::MIN)..=upto).next_back() {
                    merge(&mut b, HashMap::from([(last.0, last.1)]));
                    merge(&mut b, before(last, recs, memo));
                }
            }
            memo.insert(at, b.clone());
            b
        }
        let mut probes: Vec<(u64, (u32, i64))> = recs
            .iter()
            .filter(|(_, r)| !r.fence)
            .filter_map(|(&at, r)| Probe::decode(&r.value).ok().map(|p| (p.seq, at)))
            .collect();
        probes.sort_unstable();
        for w in probes.windows(2) {
            let ((s1, a1), (s2, a2)) = (w[0], w[1]);
            let ordered = before(a2, recs, &mut memo)
                .get(&a1.0)
                .is_some_and(|&o| o >= a1.1);
            if !ordered {
                out.push(format!("{key}: seq {s1} at {a1:?}, seq {s2} at {a2:?}"));
            }
        }
    }
    out.sort();
    out
}

/// What one run of the scenario saw.
struct Outcome {
    /// Order violations the worker counted.
    violations: u64,
    /// Consecutive records of a key the log leaves unordered.
    unordered: Vec<String>,
}

/// Runs the scenario with `routes` (`durable` or `ephemeral`).
fn restart_scenario(routes: &str) -> Outcome {
    let _alone = one_at_a_time();
    let topic = format!("restarts-{routes}");
    let Setup {
        broker,
        bootstrap,
        rt,
        client,
    } = Setup::new(&topic);
    let mut keys = Keys::new();
    let mut seqs = vec![0u64; KEYS];
    let keyshift_flags = keyshift_flags(routes);
    let hash_flags = ["--strategy", "hash", "--routes", routes];

    // Round 1 is the rollback: a hash producer, which sends every key home.
    for round in 0..3 {
        let flags: &[&str] = if round == 1 {
            &hash_flags
        } else {
            &keyshift_flags
        };
        let mut gw = GatewayProcess::start(&bootstrap, &topic, flags);
        let restored = metric(&gw.base, "keyshift_producer_routed_keys");
        // What the restarted producer knows before any record: the moved keys (durable), or
        // nothing (ephemeral). After the rollback (round 1 sends every key home, fenced when
        // durable) nothing needs to be away, so round 2 may restore none.
        match (routes, round) {
            (_, 0) => {}
            ("durable" | "coordinated", 1) => {
                assert!(restored > 0.0, "round {round}: no route restored")
            }
            ("durable" | "coordinated", _) => {}
            _ => assert_eq!(restored, 0.0, "ephemeral routes are never restored"),
        }
        eprintln!("routes {routes}, round {round}: {restored} routes restored");
        if round == 1 {
            load_batches(&rt, &client, &gw, &mut keys, &mut seqs, 30);
        } else {
            load_until_moved(
                &rt,
                &client,
                &gw,
                &mut keys,
                &mut seqs,
                30,
                routes == "durable",
            );
        }
        if round < 2 {
            let status = signal_and_wait(&mut gw.child, "-KILL", "gateway");
            assert!(!status.success(), "kill -9 ends the gateway abnormally");
        } else {
            let status = gw.terminate();
            assert!(
                status.success(),
                "gateway exits cleanly on SIGTERM: {status}"
            );
        }
    }

    check_log(&broker, &topic, &format!("check-{routes}"), &seqs, 0)
}

/// Reads the whole topic (the log check), then has one `keyshift worker` that owns every
/// partition consume it all (its sequence check).
/// Every batch was answered once acknowledged, so the topic holds exactly the probes the
/// sequence numbers `sent` count, less the `skipped` numbers (nothing lost, nothing twice).
fn check_log(
    broker: &keyshift_kafka::EmbeddedBroker,
    topic: &str,
    group: &str,
    sent: &[u64],
    skipped: u64,
) -> Outcome {
    let bootstrap = broker.bootstrap_servers().to_owned();
    let log = read_all(broker, topic);
    let unordered = unordered_pairs(&log);
    let records = log.iter().filter(|r| !r.fence).count() as f64;
    assert!(records > 0.0);
    assert_eq!(
        records as u64,
        sent.iter().sum::<u64>() - skipped,
        "probe records in the topic against records acknowledged"
    );
    let mut worker = keyshift()
        .args([
            "worker",
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("keyshift worker starts");
    let mut line = String::new();
    BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("worker banner");
    let addr = http_addr(&line);
    let deadline = Instant::now() + PATIENCE;
    let sample = |name: &str| {
        let (_, body) = http_get(&addr, "/metrics");
        parse_metrics(&body).get(name).copied().unwrap_or(0.0)
    };
    while sample("keyshift_worker_processed_records_total") < records {
        assert!(
            Instant::now() < deadline,
            "worker processed {} of {records} records within {PATIENCE:?}",
            sample("keyshift_worker_processed_records_total")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let violations = sample("keyshift_worker_order_violations_total");
    signal_and_wait(&mut worker, "-TERM", "worker");
    eprintln!(
        "{topic}: {records} records, {violations} order violations seen by the worker, {} \
         unordered pairs in the log",
        unordered.len()
    );
    Outcome {
        violations: violations as u64,
        unordered,
    }
}

#[test]
fn kill_9_twice_with_durable_routes_keeps_every_key_in_order() {
    let out = restart_scenario("durable");
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// The same restarts with coordinated routes: the routes a restarted member continues are the
/// control log's commits (one producer, so it decides again after the lease).
#[test]
fn kill_9_twice_with_coordinated_routes_keeps_every_key_in_order() {
    let out = restart_scenario("coordinated");
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// The negative control: the same scenario with routes in memory only breaks order in the log
/// (the worker's own count depends on how it interleaves partitions, so it is only printed).
#[test]
fn kill_9_twice_with_ephemeral_routes_breaks_order() {
    let out = restart_scenario("ephemeral");
    assert!(
        !out.unordered.is_empty(),
        "the negative control must leave records unordered, or the scenario proves nothing"
    );
}

/// The value of the first series of `name` whose labels contain `label` (e.g. `role="decider"`).
fn labelled(base: &str, name: &str, label: &str) -> Option<f64> {
    let addr = base.trim_start_matches("http://");
    let (_, body) = http_get(addr, "/metrics");
    parse_metrics(&body)
        .into_iter()
        .find(|(series, _)| series.starts_with(&format!("{name}{{")) && series.contains(label))
        .map(|(_, v)| v)
}

fn is_decider(gw: &GatewayProcess) -> bool {
    labelled(
        &gw.base,
        "keyshift_producer_coordination_role",
        "role=\"decider\"",
    )
    .is_some()
}

/// Committed moves as `gw` read them from the control log.
fn committed(gw: &GatewayProcess) -> f64 {
    labelled(
        &gw.base,
        "keyshift_producer_coordination_moves_total",
        "outcome=\"committed\"",
    )
    .unwrap_or(0.0)
}

/// Three gateway replicas of one topic behind one load, each batch to a random replica
/// (issue 11's many-producers scenario). With `--routes coordinated` they move keys as one;
/// `kill_decider` kills the deciding replica with `kill -9` mid-run, turns other keys hot (the
/// settled routes no longer fit) and loads the other two until a new decider has committed
/// moves of its own.
fn replicas_scenario(routes: &str, fault: Fault) -> Outcome {
    let _alone = one_at_a_time();
    let topic = format!("replicas-{routes}-{fault:?}").to_lowercase();
    let setup = Setup::new(&topic);
    let (rt, client) = (&setup.rt, &setup.client);
    let mut keys = Keys::new();
    let mut seqs = vec![0u64; KEYS];
    let flags = keyshift_flags(routes);
    // The replica paused with records in its client lingers before it sends, so the records it
    // has when it is stopped are still there; it gets no load but that batch (every batch would
    // wait for the linger), so the load goes to the first `senders` replicas.
    let zombie = fault == Fault::PauseFollower;
    let mut gateways: Vec<GatewayProcess> = (0..3)
        .map(|i| {
            let mut flags = flags.clone();
            if zombie && i == 2 {
                flags.extend(["-X", "linger.ms=400"]);
            }
            GatewayProcess::start(&setup.bootstrap, &topic, &flags)
        })
        .collect();
    let senders = if zombie { 2 } else { 3 };
    let mut spread = Spread::new();
    let mut load =
        |gateways: &[GatewayProcess], batches: usize, keys: &mut Keys, seqs: &mut [u64]| {
            let all: Vec<&GatewayProcess> = gateways.iter().take(senders).collect();
            setup.spread(&mut spread, &all, batches, keys, seqs);
        };
    let moved = |gateways: &[GatewayProcess]| -> f64 {
        if routes == "coordinated" {
            gateways.iter().map(committed).fold(0.0, f64::max)
        } else {
            gateways
                .iter()
                .map(|g| metric(&g.base, "keyshift_producer_migrations_total"))
                .sum()
        }
    };
    let deadline = Instant::now() + PATIENCE;
    load(&gateways, 60, &mut keys, &mut seqs);
    while moved(&gateways) < 3.0 {
        assert!(
            Instant::now() < deadline,
            "no key moved within {PATIENCE:?}"
        );
        load(&gateways, 10, &mut keys, &mut seqs);
    }
    // Sequence numbers left unused on purpose (see the pause below): the log holds fewer
    // records than the sequence numbers count.
    let mut skipped = 0u64;
    if fault == Fault::PauseFollower {
        // Replica 2 stops with a batch of the keys turning hot still in its Kafka client (it
        // lingers 400 ms), for three member timeouts — past the point where a move used to
        // commit without it, well before its client would give up on the batch (eight) —
        // while replica 0, the decider, is loaded with those keys.
        assert!(is_decider(&gateways[0]), "the first replica decides");
        let pid = gateways[2].child.id().to_string();
        keys.shift = KEYS / 2;
        // The held batch and the records sent during the pause are concurrent (neither waits
        // for the other's acknowledgement), so no order between them is owed. The held batch
        // takes sequence numbers GAP above the current ones and the pause's records the ones
        // below, so the checks read "pause records, then the held batch" as the order, the one
        // a fenced move without the paused replica's own fence would break; what is sent after
        // the batch is answered continues above it.
        const GAP: u64 = 1_000_000;
        let at_pause = seqs.clone();
        for s in seqs.iter_mut() {
            *s += GAP;
        }
        let batch = build_batch(&mut keys, &mut seqs);
        let after_batch = std::mem::replace(&mut seqs, at_pause.clone());
        let post = client
            .post(format!("{}/batch", gateways[2].base))
            .json(&batch)
            .send();
        // Its own thread and runtime: the answer comes only after the pause.
        let answer = std::thread::spawn(move || {
            runtime().block_on(async move {
                let response = post.await.expect("POST /batch");
                let status = response.status();
                (
                    status,
                    response.json::<Value>().await.expect("a JSON answer"),
                )
            })
        });
        // Stopped once the whole batch is in its client, waiting for the linger.
        let in_client = Instant::now() + std::time::Duration::from_secs(10);
        while metric(&gateways[2].base, "keyshift_producer_in_flight_messages") < BATCH as f64 {
            assert!(
                Instant::now() < in_client,
                "the paused replica's batch never sat in its client"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        signal(&pid, "-STOP");
        let stop = Instant::now();
        let before = committed(&gateways[0]);
        let mut unaccounted: f64 = 0.0;
        while stop.elapsed() < std::time::Duration::from_secs(6) {
            send_batch(rt, client, &gateways[0], &mut keys, &mut seqs);
            unaccounted = unaccounted.max(metric(
                &gateways[0].base,
                "keyshift_producer_coordination_unaccounted_members",
            ));
        }
        assert_eq!(unaccounted, 1.0, "the decider showed the paused replica");
        eprintln!(
            "replicas: {} moves committed while a replica was paused for {:.1} s",
            committed(&gateways[0]) - before,
            stop.elapsed().as_secs_f64()
        );
        signal(&pid, "-CONT");
        let (status, body) = answer.join().expect("the batch's answer");
        assert!(status.is_success(), "the paused replica's batch: {body}");
        for (k, s) in seqs.iter_mut().enumerate() {
            assert!(*s < at_pause[k] + GAP, "the gap is wide enough");
            skipped += at_pause[k] + GAP - *s;
            *s = after_batch[k];
        }
        // Moves resume with the paused replica, whose fences follow its late records.
        let resumed = committed(&gateways[0]);
        while committed(&gateways[0]) < resumed + 2.0 {
            assert!(
                Instant::now() < deadline,
                "no move after the pause within {PATIENCE:?}"
            );
            load(&gateways, 2, &mut keys, &mut seqs);
        }
    }
    if fault == Fault::StopFollower {
        // Both followers stop past the time they are forgotten; replica 0 carries the load.
        assert!(is_decider(&gateways[0]), "the first replica decides");
        let pids: Vec<String> = gateways[1..]
            .iter()
            .map(|g| g.child.id().to_string())
            .collect();
        keys.shift = KEYS / 2;
        for pid in &pids {
            signal(pid, "-STOP");
        }
        let stop = Instant::now();
        let before = committed(&gateways[0]);
        let mut first_commit = None;
        let mut unaccounted: f64 = 0.0;
        // The decider moves the new hot keys: not before the stopped replicas are forgotten,
        // ten member timeouts after their last heartbeats, and then without them.
        while committed(&gateways[0]) < before + 2.0 {
            assert!(
                Instant::now() < deadline,
                "no move without the stopped replicas within {PATIENCE:?}"
            );
            send_batch(rt, client, &gateways[0], &mut keys, &mut seqs);
            pace();
            if first_commit.is_none() && committed(&gateways[0]) > before {
                first_commit = Some(stop.elapsed());
            }
            unaccounted = unaccounted.max(metric(
                &gateways[0].base,
                "keyshift_producer_coordination_unaccounted_members",
            ));
        }
        assert_eq!(unaccounted, 2.0, "the decider showed the stopped replicas");
        eprintln!(
            "replicas: {} moves committed while two replicas were stopped, the first {:.1} s \
             after the stop (forgotten after {FORGET_SECS} s)",
            committed(&gateways[0]) - before,
            first_commit.unwrap_or_default().as_secs_f64()
        );
        for pid in &pids {
            signal(pid, "-CONT");
        }
        // Straight to the resumed replicas: they must catch up before routing anything.
        for i in 0..20 {
            send_batch(rt, client, &gateways[1 + i % 2], &mut keys, &mut seqs);
        }
    }
    if fault == Fault::KillFollower {
        let follower = (0..gateways.len())
            .find(|&i| !is_decider(&gateways[i]))
            .expect("a follower");
        let mut dead = gateways.remove(follower);
        let before = moved(&gateways);
        keys.shift = KEYS / 2;
        signal_and_wait(&mut dead.child, "-KILL", "following gateway");
        let killed = Instant::now();
        // Nothing commits without the dead member until it is forgotten, ten member timeouts
        // after its last heartbeat (it could be only stopped, with records in its client).
        while moved(&gateways) < before + 3.0 {
            assert!(
                Instant::now() < deadline,
                "no move committed without the dead replica within {PATIENCE:?}"
            );
            load(&gateways, 2, &mut keys, &mut seqs);
            pace();
        }
        eprintln!(
            "replicas: 3 moves committed without the killed replica, the third {:.2} s after \
             the kill -9",
            killed.elapsed().as_secs_f64()
        );
    }
    if fault == Fault::KillDecider {
        let deciders: Vec<usize> = (0..gateways.len())
            .filter(|&i| is_decider(&gateways[i]))
            .collect();
        assert_eq!(deciders.len(), 1, "exactly one replica decides");
        let mut dead = gateways.remove(deciders[0]);
        let before = moved(&gateways);
        keys.shift = KEYS / 2;
        signal_and_wait(&mut dead.child, "-KILL", "deciding gateway");
        let killed = Instant::now();
        let deadline = killed + PATIENCE;
        // Load keeps flowing through the survivors while they notice.
        while !gateways.iter().any(is_decider) {
            assert!(
                Instant::now() < deadline,
                "no new decider within {PATIENCE:?}"
            );
            load(&gateways, 2, &mut keys, &mut seqs);
        }
        eprintln!(
            "replicas: a new decider took over {:.2} s after the kill -9",
            killed.elapsed().as_secs_f64()
        );
        let takeover = Instant::now();
        while moved(&gateways) < before + 3.0 {
            assert!(
                Instant::now() < deadline,
                "the new decider committed no move within {PATIENCE:?}"
            );
            load(&gateways, 2, &mut keys, &mut seqs);
            pace();
        }
        eprintln!(
            "replicas: the new decider's moves committed {:.2} s after it took over",
            takeover.elapsed().as_secs_f64()
        );
    }
    load(&gateways, 40, &mut keys, &mut seqs);
    if routes == "coordinated" {
        // The goal's figures: how long a moved key is held, in produce round trips.
        for gw in &gateways {
            let q =
                |name: &str| labelled(&gw.base, name, "quantile=\"0.5\"").unwrap_or(f64::NAN) * 1e3;
            eprintln!(
                "replicas: hold p50 {:.1} ms, fence round trip p50 {:.1} ms",
                q("keyshift_producer_coordination_hold_seconds"),
                q("keyshift_producer_fence_rtt_seconds")
            );
        }
    }
    for gw in &mut gateways {
        let status = gw.terminate();
        assert!(
            status.success(),
            "gateway exits cleanly on SIGTERM: {status}"
        );
    }
    check_log(
        &setup.broker,
        &topic,
        &format!("check-{topic}"),
        &seqs,
        skipped,
    )
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(pid: &str, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// What goes wrong during [`replicas_scenario`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// `kill -9` of the deciding replica.
    KillDecider,
    /// SIGSTOP of both following replicas past the time they are forgotten; moves without
    /// them; SIGCONT, and straight to them.
    StopFollower,
    /// SIGSTOP of a following replica with records in its Kafka client for three member
    /// timeouts, hot keys turning meanwhile; SIGCONT: its records land.
    PauseFollower,
    /// `kill -9` of a following replica.
    KillFollower,
}

#[test]
fn three_coordinated_replicas_keep_every_key_in_order() {
    let out = replicas_scenario("coordinated", Fault::None);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

#[test]
fn a_killed_decider_is_replaced_and_order_holds() {
    let out = replicas_scenario("coordinated", Fault::KillDecider);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// A member dies mid-run: moves pause until it is forgotten (ten member timeouts: it could be
/// only stopped), then commit without it; nothing it had acknowledged is lost or unordered.
#[test]
fn a_killed_follower_is_not_waited_for_and_order_holds() {
    let out = replicas_scenario("coordinated", Fault::KillFollower);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// The negative control: replicas that each move keys on their own split keys across
/// partitions.
#[test]
fn uncoordinated_replicas_break_order() {
    let out = replicas_scenario("ephemeral", Fault::None);
    assert!(
        !out.unordered.is_empty(),
        "the negative control must leave records unordered, or the scenario proves nothing"
    );
}

/// The zombie case: two replicas stopped while the decider is loaded with keys turning hot. No
/// move commits without them until they are forgotten (ten member timeouts); resumed and sent
/// to at once, they catch up with the control log before they route anything (a member is out
/// of touch until it reads its own heartbeat back), so their records follow the moves made
/// without them.
#[test]
fn a_resumed_replica_follows_the_moves_made_without_it() {
    let out = replicas_scenario("coordinated", Fault::StopFollower);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// A replica paused with records in its client past the member timeout, but not so long that
/// its client gives up on them: they land when it resumes, so no move may commit without its
/// fence meanwhile (its moves abort and none is proposed until it is heard again).
#[test]
fn a_paused_replica_s_late_records_land_before_any_fence() {
    let out = replicas_scenario("coordinated", Fault::PauseFollower);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// Max/bound of the partitions' records sent in the second half of the run (by the probes'
/// send times): the busiest partition over the best any order-preserving placement could do
/// (the mean, or the busiest key when one key alone is more).
fn imbalance(log: &[Rec]) -> f64 {
    use std::collections::HashMap;
    let probes: Vec<(&Rec, Probe)> = log
        .iter()
        .filter(|r| !r.fence)
        .filter_map(|r| Probe::decode(&r.value).ok().map(|p| (r, p)))
        .collect();
    let (lo, hi) = probes.iter().fold((u64::MAX, 0), |(lo, hi), (_, p)| {
        (lo.min(p.sent_us), hi.max(p.sent_us))
    });
    let mid = lo + (hi - lo) / 2;
    let mut per_partition = vec![0u64; PARTITIONS as usize];
    let mut per_key: HashMap<&str, u64> = HashMap::new();
    for (r, p) in &probes {
        if p.sent_us >= mid {
            per_partition[r.partition as usize] += 1;
            *per_key.entry(&r.key).or_default() += 1;
        }
    }
    let total: u64 = per_partition.iter().sum();
    let mean = total as f64 / f64::from(PARTITIONS);
    let biggest = per_key.values().copied().max().unwrap_or(0) as f64;
    *per_partition.iter().max().unwrap() as f64 / mean.max(biggest)
}

/// `replicas` coordinated gateways, `batches` batches each posted to a random one.
fn balance_run(replicas: usize, batches: usize) -> f64 {
    let _alone = one_at_a_time();
    let topic = format!("balance-{replicas}");
    let setup = Setup::new(&topic);
    // Many keys, none above a partition's fair share: the bound is the mean.
    let mut keys = Keys::zipf(400, 0.9);
    let mut seqs = vec![0u64; 400];
    let flags = keyshift_flags("coordinated");
    let mut gateways: Vec<GatewayProcess> = (0..replicas)
        .map(|_| GatewayProcess::start(&setup.bootstrap, &topic, &flags))
        .collect();
    let all: Vec<&GatewayProcess> = gateways.iter().collect();
    setup.spread(&mut Spread::new(), &all, batches, &mut keys, &mut seqs);
    for gw in &mut gateways {
        gw.terminate();
    }
    imbalance(&read_all(&setup.broker, &topic))
}

/// A measurement, not a check (run with `--ignored`): the balance three coordinated replicas
/// reach against one gateway on the same load (issue 11 asks for max/bound within 5 %).
#[test]
#[ignore = "measurement: prints max/bound of 1 and 3 coordinated gateways"]
fn balance_of_three_replicas_against_one() {
    for round in 0..3 {
        let one = balance_run(1, 500);
        let three = balance_run(3, 500);
        eprintln!(
            "round {round}: max/bound one gateway {one:.3}, three replicas {three:.3}, ratio {:.3}",
            three / one
        );
    }
}

/// `keyshift proxy` in front of the broker, killed (even while stopped) when dropped.
struct ProxyProcess {
    child: std::process::Child,
    /// The proxy's bootstrap address.
    addr: String,
}

impl ProxyProcess {
    fn start(upstream: &str) -> Self {
        let mut child = keyshift()
            .args(["proxy", "--upstream", upstream])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("keyshift proxy starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("proxy banner");
        // "keyshift proxy: 127.0.0.1:P -> upstream; metrics on …"
        let addr = line
            .strip_prefix("keyshift proxy: ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no proxy address in {line:?}"))
            .to_owned();
        ProxyProcess { child, addr }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} of the proxy");
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control topic briefly unavailable (issue 11's fourth failure case): two coordinated
/// replicas reach their control topic through `keyshift proxy` (`--control-bootstrap-servers`)
/// and their data topic directly, so stopping the proxy (SIGSTOP) cuts them off the control
/// log alone, as a network partition or an offline control-topic leader would.
/// - A short outage (1.5 s, within two thirds of the 3 s member timeout): batches of keys
///   not being moved are still answered while the proxy is stopped; no move commits.
/// - Moves resume once it is back.
/// - A long outage (4 s): once a replica has not read its own heartbeat back for 2 s it holds
///   off new records, so a batch sent then is not answered until the control log is back.
///
/// Then the log and a worker check every key's order, and that nothing is lost.
#[test]
fn a_control_topic_outage_pauses_moves_but_not_other_keys() {
    let _alone = one_at_a_time();
    let topic = "control-outage";
    let setup = Setup::new(topic);
    let (rt, client) = (&setup.rt, &setup.client);
    let proxy = ProxyProcess::start(&setup.bootstrap);
    // The default member timeout (3 s): the outages below are timed against it.
    let mut flags: Vec<&str> = GATEWAY_FLAGS.to_vec();
    flags.extend(["--routes", "coordinated"]);
    flags.extend(["--control-bootstrap-servers", proxy.addr.as_str()]);
    let mut gateways: Vec<GatewayProcess> = (0..2)
        .map(|_| GatewayProcess::start(&setup.bootstrap, topic, &flags))
        .collect();
    let all: Vec<&GatewayProcess> = gateways.iter().collect();
    let mut keys = Keys::new();
    // Probe sequence numbers of every key name the test uses: hot ones and, shifted, fresh
    // ones that no move can be pending for.
    let mut seqs = vec![0u64; 4 * KEYS];
    let mut spread = Spread::new();
    let committed_now = || all.iter().map(|g| committed(g)).fold(0.0, f64::max);
    let deadline = Instant::now() + PATIENCE;
    setup.spread(&mut spread, &all, 60, &mut keys, &mut seqs);
    while committed_now() < 3.0 {
        assert!(
            Instant::now() < deadline,
            "no key moved within {PATIENCE:?}"
        );
        setup.spread(&mut spread, &all, 10, &mut keys, &mut seqs);
    }

    // The short outage, with keys no move can be pending for (a move holds a key from the
    // moment a member reads its proposal, and no member reads anything while cut off). It is
    // shorter than the hold-off (two thirds of the member timeout after a replica's last read),
    // and the batches run on their own thread: one still in flight when a replica starts
    // holding off is answered after `-CONT` instead of holding the test (and the proxy) up.
    let before = committed_now();
    proxy.signal("-STOP");
    let stopped = Instant::now();
    let outage = std::time::Duration::from_millis(1200);
    let mut fresh = Keys::new().named_from(2 * KEYS);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (answered, during) = std::thread::scope(|scope| {
        let (fresh, seqs, spread, done) = (&mut fresh, &mut seqs, &mut spread, &done);
        let all = &all;
        let sender = scope.spawn(move || {
            let mut answered = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let gw = all[spread.pick(all.len())];
                send_batch(rt, client, gw, fresh, seqs);
                if stopped.elapsed() < outage {
                    answered += 1;
                }
            }
            answered
        });
        std::thread::sleep(outage.saturating_sub(stopped.elapsed()));
        let during = committed_now();
        proxy.signal("-CONT");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (sender.join().expect("the sender thread"), during)
    });
    eprintln!(
        "control outage: {answered} batches of unmoved keys answered in {outage:?} without it"
    );
    assert!(
        answered > 0,
        "records of unmoved keys stopped flowing with the control topic"
    );
    assert_eq!(during, before, "a move committed without the control log");

    // Moves resume: the hot keys again, shifted so that the settled routes no longer fit.
    keys.shift = KEYS;
    while committed_now() < before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "moves did not resume within {PATIENCE:?}"
        );
        setup.spread(&mut spread, &all, 5, &mut keys, &mut seqs);
    }

    // The long outage: past two thirds of the member timeout a replica holds off records.
    proxy.signal("-STOP");
    std::thread::sleep(std::time::Duration::from_millis(2600));
    let mut fresh = Keys::new().named_from(3 * KEYS);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let gw = all[0];
        let (keys, seqs) = (&mut fresh, &mut seqs);
        scope.spawn(move || {
            send_batch(rt, client, gw, keys, seqs);
            tx.send(()).unwrap();
        });
        let early = rx.recv_timeout(std::time::Duration::from_millis(1400));
        proxy.signal("-CONT");
        assert!(
            early.is_err(),
            "a replica out of touch with the control log answered a batch"
        );
        rx.recv_timeout(PATIENCE)
            .expect("the held batch is answered once the control log is back");
    });

    setup.spread(&mut spread, &all, 20, &mut keys, &mut seqs);
    let failures: f64 = all
        .iter()
        .map(|g| {
            metric(
                &g.base,
                "keyshift_producer_coordination_write_failures_total",
            )
        })
        .sum();
    eprintln!("control outage: {failures} control writes failed and were retried or undone");
    drop(all);
    for gw in &mut gateways {
        let status = gw.terminate();
        assert!(
            status.success(),
            "gateway exits cleanly on SIGTERM: {status}"
        );
    }
    let out = check_log(&setup.broker, topic, "check-control-outage", &seqs, 0);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// Issue 13 with real processes: a gateway homes keys on 6 of the topic's 12 partitions
/// (`--active-partitions`, the path of a broker without CreatePartitions), `keyshift expand`
/// grows it to 12 between two rounds of skewed load, then the gateway is killed with
/// `kill -9` and restarted with the flags it started with: the route state's epoch, not the
/// flag, decides where keys are homed. The log check and a worker owning every partition see
/// every key in order across the growth and the restart. (The unfenced growth that breaks order
/// is the negative control of `experiment.rs`.)
#[test]
fn expand_grows_a_gateway_s_partitions_and_a_restart_keeps_the_epoch() {
    let _alone = one_at_a_time();
    let topic = "grow-6-to-12";
    let broker = broker_with_topic(topic, 2 * PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_owned();
    let (rt, client) = (runtime(), reqwest::Client::new());
    let active = PARTITIONS.to_string();
    let mut flags = keyshift_flags("durable");
    flags.extend(["--active-partitions", active.as_str()]);
    let mut keys = Keys::new();
    let mut seqs = vec![0u64; KEYS];
    let mut gw = GatewayProcess::start(&bootstrap, topic, &flags);
    load_batches(&rt, &client, &gw, &mut keys, &mut seqs, 30);
    let before = read_all(&broker, topic);
    assert!(
        before.iter().all(|r| r.partition < PARTITIONS),
        "nothing on the partitions not in use yet"
    );

    let expand = |extra: &[&str]| {
        keyshift()
            .args([
                "expand",
                "--bootstrap-servers",
                &bootstrap,
                "--topic",
                topic,
            ])
            .args(["--partitions", "12", "--gateway", &gw.base])
            .args(extra)
            .output()
            .expect("keyshift expand runs")
    };
    let grown = expand(&["--json"]);
    let stderr = String::from_utf8_lossy(&grown.stderr);
    assert!(grown.status.success(), "expand failed: {stderr}");
    assert!(stderr.contains("has 12 partitions already"), "{stderr}");
    let summary: Value = serde_json::from_slice(&grown.stdout).expect("one JSON summary");
    assert_eq!(
        (summary["from"].as_u64(), summary["to"].as_u64()),
        (Some(6), Some(12))
    );
    assert_eq!(summary["epoch"], 1, "{summary}");
    assert_eq!(
        summary["epoch_fences"], 6,
        "one per old partition: {summary}"
    );
    assert_eq!(summary["remapped_share"], 0.5, "{summary}");
    // A second growth to the same count is refused, naming why.
    let again = expand(&[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("not more than the 12"), "{stderr}");

    load_batches(&rt, &client, &gw, &mut keys, &mut seqs, 30);
    let status = signal_and_wait(&mut gw.child, "-KILL", "gateway");
    assert!(!status.success());
    // Restarted with `--active-partitions 6` again: the recorded epoch homes keys on 12.
    let mut gw = GatewayProcess::start(&bootstrap, topic, &flags);
    load_batches(&rt, &client, &gw, &mut keys, &mut seqs, 30);
    assert!(gw.terminate().success());

    let (on_new, headed) = after_growth(&read_all(&broker, topic));
    assert!(
        on_new > 0,
        "keys are homed on 12 after the growth and the restart"
    );
    assert!(headed > 0, "remapped keys carry their old home's barrier");
    let out = check_log(&broker, topic, "check-grow", &seqs, 0);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}

/// Records on the partitions a growth of `PARTITIONS` added, and records carrying an epoch
/// barrier (set 0): both must be there after a growth.
fn after_growth(log: &[Rec]) -> (usize, usize) {
    let on_new = log
        .iter()
        .filter(|r| !r.fence && r.partition >= PARTITIONS)
        .count();
    let headed = log
        .iter()
        .filter(|r| !r.fence && r.route.is_some_and(|h| h.set_index == 0))
        .count();
    eprintln!("{on_new} records on the new partitions, {headed} with an epoch barrier");
    (on_new, headed)
}

/// Issue 13 with coordinated routes: three gateway replicas home keys on 6 of a topic's 12
/// partitions while load is spread over all of them; `keyshift expand` asks a *follower* (not
/// the decider) to grow to 12 while the load goes on — and while the third replica is stopped
/// (SIGSTOP). The growth must not complete without it (it could still send records to the old
/// partitions): three member timeouts later `expand` is still waiting and the replica is named
/// as unaccounted for. Once it resumes, the growth is proposed (again) and completes; every replica writes its own epoch fences and the
/// epoch's barriers are the highest of theirs. A replica killed with `kill -9` after the
/// growth and restarted with its start flags homes keys on 12: the control log's epoch
/// decides, not the flag. The log check (which sees every replica's records) and a worker
/// owning every partition find every key in order.
#[test]
fn coordinated_replicas_grow_together_and_a_restart_keeps_the_epoch() {
    let _alone = one_at_a_time();
    let topic = "grow-coordinated";
    let broker = broker_with_topic(topic, 2 * PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_owned();
    let (rt, client) = (runtime(), reqwest::Client::new());
    let active = PARTITIONS.to_string();
    let mut flags = keyshift_flags("coordinated");
    flags.extend(["--active-partitions", active.as_str()]);
    let mut keys = Keys::new();
    let mut seqs = vec![0u64; KEYS];
    let mut gateways: Vec<GatewayProcess> = (0..3)
        .map(|_| GatewayProcess::start(&bootstrap, topic, &flags))
        .collect();
    let mut spread = Spread::new();
    let mut load =
        |gateways: &[GatewayProcess], batches: usize, keys: &mut Keys, seqs: &mut [u64]| {
            for _ in 0..batches {
                let gw = &gateways[spread.pick(gateways.len())];
                send_batch(&rt, &client, gw, keys, seqs);
                pace();
            }
        };
    load(&gateways, 30, &mut keys, &mut seqs);
    assert!(
        read_all(&broker, topic)
            .iter()
            .all(|r| r.partition < PARTITIONS),
        "nothing on the partitions not in use yet"
    );
    let asked = gateways
        .iter()
        .position(|g| !is_decider(g))
        .expect("two of three replicas follow");

    // The growth runs while the replicas take load, one of them stopped at first.
    let paused = (asked + 1) % 3;
    let running = [asked, 3 - asked - paused];
    let pid = gateways[paused].child.id().to_string();
    signal(&pid, "-STOP");
    let mut expand = keyshift()
        .args([
            "expand",
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            topic,
        ])
        .args([
            "--partitions",
            "12",
            "--gateway",
            &gateways[asked].base,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyshift expand starts");
    let stopped = Instant::now();
    let member_timeout: u64 = MEMBER_TIMEOUT.parse().unwrap();
    let during = std::time::Duration::from_secs(3 * member_timeout);
    for i in 0.. {
        if stopped.elapsed() >= during {
            break;
        }
        let gw = &gateways[running[i % 2]];
        send_batch(&rt, &client, gw, &mut keys, &mut seqs);
        pace();
    }
    assert!(
        expand.try_wait().expect("expand is waited for").is_none(),
        "the growth completed while a replica that may still send to the old partitions was \
         stopped"
    );
    // Operators see it: wanted above homed, and the stopped replica named as unaccounted for.
    // Whether a growth was proposed and then called off, or never proposed, depends on whether
    // the decider read the want before the replica had been silent for a member timeout (the
    // `expand` process has to start first): both keep the growth from completing, and only
    // the unaccounted member is seen in either.
    let base = &gateways[asked].base;
    assert_eq!(
        metric(base, "keyshift_producer_coordination_wanted_partitions"),
        12.0
    );
    assert_eq!(metric(base, "keyshift_producer_homed_partitions"), 6.0);
    assert_eq!(
        metric(base, "keyshift_producer_coordination_unaccounted_members"),
        1.0,
        "the stopped replica is named as unaccounted for"
    );
    let aborted = labelled(
        base,
        "keyshift_producer_coordination_growths_total",
        "outcome=\"aborted\"",
    )
    .unwrap_or(0.0);
    eprintln!("growth attempts called off while a replica was stopped: {aborted}");
    signal(&pid, "-CONT");
    let deadline = Instant::now() + PATIENCE;
    while expand.try_wait().expect("expand is waited for").is_none() {
        assert!(
            Instant::now() < deadline,
            "expand did not end within {PATIENCE:?}"
        );
        load(&gateways, 1, &mut keys, &mut seqs);
    }
    eprintln!(
        "the growth completed {:.1} s after the replica was stopped, {:.1} s after it resumed",
        stopped.elapsed().as_secs_f64(),
        (stopped.elapsed() - during).as_secs_f64()
    );
    let grown = expand.wait_with_output().expect("expand's output");
    let stderr = String::from_utf8_lossy(&grown.stderr);
    assert!(grown.status.success(), "expand failed: {stderr}");
    let summary: Value = serde_json::from_slice(&grown.stdout).expect("one JSON summary");
    eprintln!("coordinated growth: {summary}");
    assert_eq!(
        (summary["from"].as_u64(), summary["to"].as_u64()),
        (Some(6), Some(12))
    );
    assert_eq!(summary["epoch"], 1, "{summary}");
    assert_eq!(
        summary["epoch_fences"], 6,
        "the asked replica's own fences, one per old partition: {summary}"
    );

    load(&gateways, 20, &mut keys, &mut seqs);
    for gw in &gateways {
        assert_eq!(metric(&gw.base, "keyshift_producer_homed_partitions"), 12.0);
        assert_eq!(metric(&gw.base, "keyshift_producer_epoch"), 1.0);
        assert_eq!(metric(&gw.base, "keyshift_producer_growth_running"), 0.0);
    }
    // Every replica wrote its epoch fences: three per old partition.
    let epoch_fences = read_all(&broker, topic)
        .iter()
        .filter(|r| r.fence && r.key.starts_with('\0'))
        .count();
    assert!(
        epoch_fences >= 3 * PARTITIONS as usize,
        "one per replica and old partition (more if a growth was tried again): {epoch_fences}"
    );

    let victim = (asked + 1) % 3;
    let status = signal_and_wait(&mut gateways[victim].child, "-KILL", "gateway");
    assert!(!status.success());
    gateways[victim] = GatewayProcess::start(&bootstrap, topic, &flags);
    load(&gateways, 30, &mut keys, &mut seqs);
    for gw in &mut gateways {
        assert!(gw.terminate().success());
    }

    let (on_new, headed) = after_growth(&read_all(&broker, topic));
    assert!(on_new > 0, "keys are homed on 12 after the growth");
    assert!(headed > 0, "remapped keys carry their old home's barrier");
    let out = check_log(&broker, topic, "check-grow-coordinated", &seqs, 0);
    assert_eq!(out.violations, 0);
    assert!(out.unordered.is_empty(), "{:#?}", out.unordered);
}
