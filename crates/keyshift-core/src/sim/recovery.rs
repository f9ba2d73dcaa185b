//! Time to recover: how long a strategy's placement stays unbalanced after the load changes
//! shape, and how many moves it took to balance it again.
//!
//! Arrivals are cut into consecutive windows of a fixed number of records ([`Windowing`],
//! sized by `SimConfig::recovery_window`), aligned on the first record so that a period that
//! divides them, such as the targeted generator's rotation, starts windows too; those from the
//! first window that starts after the warm-up are measured. (With a sudden hot key in a
//! targeted workload the generator counts only its own records, so its rotations drift off
//! the window boundaries.) Each window's imbalance is the report's own `max_over_bound`
//! ([`crate::stats::imbalance`]: the busiest partition's records over `max(mean, hottest
//! key)`, here counted within the window). An *event* is an arrival with
//! which the workload changed shape (the targeted hot spot moved, a sudden hot key appeared).
//! It is a *disturbance* when the first window that starts at or after it is above
//! [`RECOVERED_MAX_OVER_BOUND`]; it *recovers* at the first later window at or below it. Time
//! to recover runs from the event's arrival to the start of that window (when the last window
//! above the limit ended), and its moves are those decided in between. A disturbance that no
//! window recovers before the run ends is counted as unrecovered and kept out of the time and
//! move figures, never dropped. An event with no complete window after it is not judged.
//!
//! Why windows of records, not of seconds, and why 1000 per partition
//! ([`DEFAULT_WINDOW_PER_PARTITION`]): a window's partition loads are sampling noise around
//! the placement's shares, so a window must be large enough that a balanced placement reads at
//! or below the limit. With `m` records per partition on average, a partition's load has a
//! standard deviation of about `√m`; at `m` = 1000 the 1.1 limit lies 3.3 deviations above the
//! mean (a balanced placement of 10 partitions reads above it in about 0.4 % of windows),
//! whereas one second of the seed's workload (20 records a partition) reads about 1.4 however
//! the keys are placed. Counting records per partition keeps that the same at any rate and
//! partition count; the price is resolution: one window is 50 s of the seed's 200 records/s on
//! 10 partitions.
//!
//! A window must not span the changes it judges, though: over a whole cycle of the targeted
//! hot spot every set is loaded once, and hash's windows of 10 000 records read as balanced
//! (1.02–1.09 on the seed's shape) without a single move. So by default a window is at most one
//! rotation (3000 records: 300 per partition on 10 partitions). At that size noise is large: a
//! placement balanced for every set still reads above 1.1 in roughly 30 % of the windows, so a
//! recovery may show one window late (15 s at 200 records/s) and a few disturbances are noise.

use serde::Serialize;

/// The imbalance (`max_over_bound`) at or below which a window counts as balanced.
pub const RECOVERED_MAX_OVER_BOUND: f64 = 1.1;

/// Default average records per partition in one window (see the module doc for why 1000).
pub const DEFAULT_WINDOW_PER_PARTITION: u64 = 1000;

/// How arrivals (numbered from 0) are cut into windows: `size` records each, aligned on
/// record 0; measured windows start with the first that begins at or after the warm-up cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Records per window (≥ 1).
    pub size: u64,
    /// The first record of the first measured window.
    pub first_start: u64,
}

impl Windowing {
    /// Windows of `size` (≥ 1) records, measured from the first boundary at or after record
    /// `warmup_records`.
    pub fn new(size: u64, warmup_records: u64) -> Windowing {
        let size = size.max(1);
        Windowing {
            size,
            first_start: warmup_records.div_ceil(size) * size,
        }
    }

    /// The measured window holding record `rec`, if any.
    pub fn of(&self, rec: u64) -> Option<usize> {
        (rec >= self.first_start).then(|| ((rec - self.first_start) / self.size) as usize)
    }

    /// The first measured window that starts at or after record `rec`.
    pub fn first_from(&self, rec: u64) -> usize {
        (rec.max(self.first_start) - self.first_start).div_ceil(self.size) as usize
    }

    /// How many measured windows `records` records fill completely.
    pub fn complete(&self, records: u64) -> usize {
        (records.saturating_sub(self.first_start) / self.size) as usize
    }
}

/// One complete window of measured arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Arrival time of its first record (seconds).
    pub start_s: f64,
    /// Moves the strategy had decided before routing its first record.
    pub moves_before: u64,
    /// Its imbalance: busiest partition ÷ `max(mean, hottest key)` within the window.
    pub max_over_bound: f64,
}

/// An arrival with which the workload changed shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Its arrival time (seconds).
    pub at_s: f64,
    /// Moves decided before it was routed.
    pub moves_before: u64,
    /// Index of the first window that starts at or after it.
    pub first_window: usize,
}

/// What [`recovery`] found over one run (`keyshift simulate`'s `recovery` JSON object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// Records per window (the resolution of the times below).
    pub window_records: u64,
    /// Events after which the first window was above the limit.
    pub disturbances: u64,
    /// Disturbances with no window at or below the limit before the run ended.
    pub unrecovered: u64,
    /// Median seconds (simulated) from a recovered disturbance's event to its recovery; `null`
    /// when none recovered.
    pub recover_s_p50: Option<f64>,
    /// Longest such time; `null` when none recovered.
    pub recover_s_max: Option<f64>,
    /// Median moves decided between a recovered disturbance's event and its recovery.
    pub moves_p50: Option<u64>,
    /// Most such moves.
    pub moves_max: Option<u64>,
}

/// Disturbances and recoveries of `events` over `windows` (both in time order), with windows of
/// `window_records` records.
pub fn recovery(windows: &[Window], events: &[Event], window_records: u64) -> Recovery {
    let unbalanced = |w: &Window| w.max_over_bound > RECOVERED_MAX_OVER_BOUND;
    let mut times = Vec::new();
    let mut moves = Vec::new();
    let mut disturbances = 0;
    for e in events {
        let Some(first) = windows.get(e.first_window) else {
            continue;
        };
        if !unbalanced(first) {
            continue;
        }
        disturbances += 1;
        if let Some(w) = windows[e.first_window + 1..]
            .iter()
            .find(|w| !unbalanced(w))
        {
            times.push(w.start_s - e.at_s);
            moves.push(w.moves_before - e.moves_before);
        }
    }
    times.sort_by(f64::total_cmp);
    moves.sort_unstable();
    Recovery {
        window_records,
        disturbances,
        unrecovered: disturbances - times.len() as u64,
        recover_s_p50: median(&times),
        recover_s_max: times.last().copied(),
        moves_p50: median(&moves),
        moves_max: moves.last().copied(),
    }
}

/// The lower median of sorted `xs` (an observed value, not an average of two); `None` if empty.
fn median<T: Copy>(xs: &[T]) -> Option<T> {
    xs.get(xs.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of 10 s starting at 0, with `moves` decided in each, at the given imbalances.
    fn series(ratios: &[f64], moves: u64) -> Vec<Window> {
        ratios
            .iter()
            .enumerate()
            .map(|(i, &r)| Window {
                start_s: 10.0 * i as f64,
                moves_before: moves * i as u64,
                max_over_bound: r,
            })
            .collect()
    }

    fn event(at_s: f64, moves_before: u64, first_window: usize) -> Event {
        Event {
            at_s,
            moves_before,
            first_window,
        }
    }

    #[test]
    fn a_disturbance_recovers_at_the_first_balanced_window() {
        // Event at 18 s (after 7 moves), judged from window 2 (20 s): above the limit until
        // window 4 (40 s) reads 1.1 exactly, which counts as recovered.
        let w = series(&[1.0, 1.02, 1.6, 1.3, 1.1, 1.4], 4);
        let r = recovery(&w, &[event(18.0, 7, 2)], 1000);
        assert_eq!(r.disturbances, 1);
        assert_eq!(r.unrecovered, 0);
        assert_eq!(r.recover_s_p50, Some(22.0));
        assert_eq!(r.recover_s_max, Some(22.0));
        // 16 moves before window 4, 7 before the event.
        assert_eq!(r.moves_p50, Some(9));
        assert_eq!(r.moves_max, Some(9));
        assert_eq!(r.window_records, 1000);
    }

    #[test]
    fn a_disturbance_never_recovered_is_counted_not_dropped() {
        let w = series(&[1.0, 1.5, 1.4, 1.3, 1.2], 0);
        let r = recovery(&w, &[event(10.0, 0, 1)], 1000);
        assert_eq!(r.disturbances, 1);
        assert_eq!(r.unrecovered, 1);
        assert_eq!(r.recover_s_p50, None);
        assert_eq!(r.recover_s_max, None);
        assert_eq!(r.moves_p50, None);
        assert_eq!(r.moves_max, None);
    }

    #[test]
    fn an_event_followed_by_a_balanced_window_is_no_disturbance() {
        let w = series(&[1.0, 1.05, 1.3, 1.0], 1);
        // The second event is judged by window 3 (balanced): not a disturbance, although
        // window 2 before it was unbalanced.
        let r = recovery(&w, &[event(5.0, 0, 1), event(25.0, 2, 3)], 1000);
        assert_eq!(r.disturbances, 0);
        assert_eq!(r.unrecovered, 0);
        assert_eq!(r.recover_s_p50, None);
    }

    #[test]
    fn events_without_a_complete_window_after_them_are_not_judged() {
        let w = series(&[1.5, 1.5], 0);
        let r = recovery(&w, &[event(21.0, 0, 2)], 1000);
        assert_eq!(r.disturbances, 0);
        assert_eq!(r.unrecovered, 0);
    }

    #[test]
    fn several_disturbances_give_median_and_max() {
        // Three events: recover after 10 s (window 2), after 20 s and never.
        let w = series(&[1.0, 1.5, 1.0, 1.5, 1.5, 1.0, 1.5, 1.3], 3);
        let events = [event(10.0, 3, 1), event(30.0, 9, 3), event(60.0, 18, 6)];
        let r = recovery(&w, &events, 500);
        assert_eq!(r.disturbances, 3);
        assert_eq!(r.unrecovered, 1);
        // Recovered: 10 s / 3 moves and 20 s / 6 moves; the lower median is the first.
        assert_eq!(r.recover_s_p50, Some(10.0));
        assert_eq!(r.recover_s_max, Some(20.0));
        assert_eq!(r.moves_p50, Some(3));
        assert_eq!(r.moves_max, Some(6));
    }

    #[test]
    fn events_judged_by_the_same_window_recover_together() {
        // Two events before window 1 (a hot spot rotating faster than a window): both are
        // disturbances recovering at window 2, each timed from its own arrival.
        let w = series(&[1.0, 1.4, 1.0], 0);
        let r = recovery(&w, &[event(2.0, 0, 1), event(8.0, 0, 1)], 1000);
        assert_eq!(r.disturbances, 2);
        assert_eq!(r.recover_s_p50, Some(12.0));
        assert_eq!(r.recover_s_max, Some(18.0));
    }

    #[test]
    fn windows_align_on_record_zero_and_start_after_warm_up() {
        // Warm-up 40 000 records, windows of 3000: the first measured one starts at 42 000.
        let w = Windowing::new(3000, 40_000);
        assert_eq!(w.first_start, 42_000);
        assert_eq!(w.of(41_999), None);
        assert_eq!(w.of(42_000), Some(0));
        assert_eq!(w.of(44_999), Some(0));
        assert_eq!(w.of(45_000), Some(1));
        // An event on a boundary is judged by the window it starts; else by the next.
        assert_eq!(w.first_from(45_000), 1);
        assert_eq!(w.first_from(45_001), 2);
        assert_eq!(w.first_from(10), 0);
        // 50 000 records: windows 42 000–45 000 and 45 000–48 000 are complete.
        assert_eq!(w.complete(50_000), 2);
        assert_eq!(w.complete(40_000), 0);
        // A warm-up on a boundary starts the first window.
        assert_eq!(Windowing::new(10_000, 40_000).first_start, 40_000);
    }
}
