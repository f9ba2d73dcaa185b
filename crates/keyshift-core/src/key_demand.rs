//! How many consumers a hot key needs, measured by the consumer that processes it.
//!
//! Per-key order lets one consumer at a time process a key, so a key whose arrival rate λ times
//! its service time S exceeds 1 cannot keep up wherever it is placed: no strategy can fix it,
//! and moving it only parks it (issue 14, "giant keys"). The simulator and the experiment know
//! λ and S; a running consumer knows neither directly, but it knows, for every record it
//! processes, how long its handler took (busy time) and when the record was produced (its
//! Kafka timestamp). Over the records of key `k` processed in a window:
//!
//! `consumers needed = busy time of k ÷ producer-time span of those records`
//!
//! which is `n·S ÷ (n/λ) = λ·S`, whatever the backlog: a key processed from a backlog has its
//! old records' timestamps, so the span measures the rate they were produced at, not the rate
//! they are processed at. [`KeyDemand`] keeps, for the current window of `window_secs`
//! (consumer clock), per key: records, busy seconds, first and last timestamp; when the window
//! ends it lists the keys above one consumer ([`KeyDemand::infeasible`]).
//!
//! Bounds and caveats (documented for the metric): a window tracks at most `max_keys` keys, in
//! the order they first appear — an infeasible key is processed back to back, so it appears
//! early in every window; a key needs at least [`MIN_RECORDS`] records in a window and a
//! positive span to be judged; records without a timestamp are skipped. A burst (many records
//! produced at once, then silence) shows as one high window; sustained values above 1 are the
//! signal, which is how an alert should read the gauge.
//!
//! A producer cannot judge this: a partition's consumption pace is the share of its
//! consumer's time that partition got, and a consumer serving several partitions splits its
//! time, so without knowing which consumer owns which partitions a slow pace does not tell a
//! key that needs more than one consumer from a consumer busy elsewhere. The consumer measures
//! it exactly.

use rustc_hash::FxHashMap;

use crate::sim::{InfeasibleKey, MAX_LISTED_KEYS};

/// Fewest records of a key in one window for its demand to be judged.
pub const MIN_RECORDS: u64 = 10;

/// One key's records in the current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    records: u64,
    busy_secs: f64,
    first_ms: i64,
    last_ms: i64,
}

/// Per-key consumer demand over fixed windows; see the module docs.
#[derive(Debug, Clone)]
pub struct KeyDemand {
    window_secs: f64,
    max_keys: usize,
    started: Option<f64>,
    keys: FxHashMap<Box<[u8]>, Window>,
    /// Keys above one consumer in the last closed window, hottest first (at most
    /// [`MAX_LISTED_KEYS`]).
    infeasible: Vec<InfeasibleKey>,
    /// How many keys were above one consumer in it (may exceed the listed ones).
    infeasible_count: usize,
}

impl KeyDemand {
    /// A tracker over windows of `window_secs` (> 0) that follows at most `max_keys` (≥ 1) keys
    /// per window.
    pub fn new(window_secs: f64, max_keys: usize) -> Self {
        Self {
            window_secs: window_secs.max(f64::MIN_POSITIVE),
            max_keys: max_keys.max(1),
            started: None,
            keys: FxHashMap::default(),
            infeasible: Vec::new(),
            infeasible_count: 0,
        }
    }

    /// One processed record of `key`, produced at `timestamp_ms`, whose handler took
    /// `busy_secs`, finished at `now` (seconds on the consumer's monotonic clock).
    pub fn record(&mut self, key: &[u8], timestamp_ms: i64, busy_secs: f64, now: f64) {
        self.tick(now);
        if let Some(w) = self.keys.get_mut(key) {
            w.records += 1;
            w.busy_secs += busy_secs;
            w.first_ms = w.first_ms.min(timestamp_ms);
            w.last_ms = w.last_ms.max(timestamp_ms);
        } else if self.keys.len() < self.max_keys {
            self.keys.insert(
                key.into(),
                Window {
                    records: 1,
                    busy_secs,
                    first_ms: timestamp_ms,
                    last_ms: timestamp_ms,
                },
            );
        }
    }

    /// Closes the window if `now` is past its end (call it also when nothing is processed, so
    /// an idle consumer's list empties).
    pub fn tick(&mut self, now: f64) {
        let started = *self.started.get_or_insert(now);
        let elapsed = now - started;
        if elapsed < self.window_secs {
            return;
        }
        // Records only ever join the open window, so what `keys` holds is from
        // [started, started + window); if `now` is a window past that, the last closed window
        // was empty and is what must be reported.
        let idle = elapsed >= 2.0 * self.window_secs;
        let mut over: Vec<InfeasibleKey> = self
            .keys
            .drain()
            .filter_map(|(key, w)| judge(&key, &w))
            .collect();
        if idle {
            over.clear();
        }
        over.sort_by(|a, b| b.consumers_needed.total_cmp(&a.consumers_needed));
        self.infeasible_count = over.len();
        over.truncate(MAX_LISTED_KEYS);
        self.infeasible = over;
        self.started = Some(now);
    }

    /// Keys that needed more than one consumer in the last closed window, neediest first.
    pub fn infeasible(&self) -> &[InfeasibleKey] {
        &self.infeasible
    }

    /// How many keys needed more than one consumer in the last closed window.
    pub fn infeasible_count(&self) -> usize {
        self.infeasible_count
    }
}

/// The key's demand if it is judged and above one consumer.
fn judge(key: &[u8], w: &Window) -> Option<InfeasibleKey> {
    let span_secs = (w.last_ms - w.first_ms) as f64 / 1e3;
    if w.records < MIN_RECORDS || span_secs <= 0.0 {
        return None;
    }
    // n records span n − 1 gaps: the rate is (n − 1)/span, the busy time per record busy/n.
    let rate = (w.records - 1) as f64 / span_secs;
    let needed = rate * w.busy_secs / w.records as f64;
    (needed > 1.0).then(|| InfeasibleKey {
        key: String::from_utf8_lossy(key).into_owned(),
        rate_rps: rate,
        consumers_needed: needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` records of `key` produced every `gap_ms` and served `service_secs` each,
    /// processed back to back from `start` (a backlog), returning the time after the last.
    fn feed(
        d: &mut KeyDemand,
        key: &[u8],
        n: u64,
        gap_ms: i64,
        service_secs: f64,
        start: f64,
    ) -> f64 {
        let mut now = start;
        for i in 0..n {
            now += service_secs;
            d.record(key, 1_000_000 + i as i64 * gap_ms, service_secs, now);
        }
        now
    }

    #[test]
    fn a_key_produced_faster_than_served_needs_more_than_one_consumer() {
        let mut d = KeyDemand::new(20.0, 64);
        // λ = 40/s (25 ms apart), S = 35 ms: needs 1.4 consumers, though it is processed at
        // only 1/S from a backlog.
        let now = feed(&mut d, b"giant", 300, 25, 0.035, 0.0);
        // A feasible key beside it: λ = 10/s, S = 35 ms → 0.35.
        feed(&mut d, b"calm", 50, 100, 0.035, 0.0);
        d.tick(now + 10.0);
        assert_eq!(d.infeasible_count(), 1);
        let k = &d.infeasible()[0];
        assert_eq!(k.key, "giant");
        assert!((k.consumers_needed - 1.4).abs() < 1e-9, "{k:?}");
        assert!((k.rate_rps - 40.0).abs() < 1e-9, "{k:?}");
    }

    #[test]
    fn nothing_is_judged_before_a_window_closes_or_with_too_few_records() {
        let mut d = KeyDemand::new(10.0, 64);
        feed(&mut d, b"giant", 100, 25, 0.035, 0.0);
        assert!(d.infeasible().is_empty(), "the first window is still open");
        let mut d = KeyDemand::new(1.0, 64);
        let now = feed(&mut d, b"few", MIN_RECORDS - 1, 10, 0.5, 0.0);
        d.tick(now + 1.0);
        assert_eq!(d.infeasible_count(), 0);
    }

    #[test]
    fn an_idle_consumer_forgets_and_a_full_window_ignores_new_keys() {
        let mut d = KeyDemand::new(2.0, 1);
        let now = feed(&mut d, b"first", 40, 10, 0.03, 0.0);
        // Second key arrives while the window (capacity 1) is full: not tracked.
        feed(&mut d, b"second", 40, 10, 0.03, 0.0);
        d.tick(now + 1.3);
        let keys: Vec<_> = d.infeasible().iter().map(|k| k.key.clone()).collect();
        assert_eq!(keys, ["first"]);
        // A whole window without a record: the list empties.
        d.tick(now + 8.0);
        assert!(d.infeasible().is_empty());
    }
}
