//! Consumer-lag evaluation: from periodic samples of a partition's committed and end offsets
//! to lag in records and seconds, rates, time to drain and a Burrow-style status.
//!
//! Nothing here talks to Kafka or reads a clock: an adapter (keyshift-kafka's `LagCollector`)
//! samples offsets on an interval, feeds each partition's [`PartitionWindow`] one [`Sample`]
//! per round and each topic partition's [`OffsetTimeTable`] its end offsets, and asks for an
//! [`Assessment`]. Groups roll their partitions up with [`group_status`].
//!
//! # Status rules
//!
//! Burrow (LinkedIn's lag checker) judges a partition by a sliding window of the group's
//! offset commits. Kafka's OffsetFetch does not say *when* an offset was committed, so keyshift
//! judges a window of *samples* taken on its own interval (default 10 samples, like Burrow's
//! `intervals`), and tells a stopped consumer from a stalled one by group membership instead
//! of commit timestamps. Rules, in the order they are applied to a partition:
//!
//! 1. **OK** if the lag was 0 at any sample of the window, the latest included: a consumer
//!    that caught up within the window is keeping up, and a partition with nothing to consume
//!    is never in trouble. This is Burrow's first rule, checked before all others
//!    (`calculatePartitionStatus`: "if the lag was zero at any point, skip the rest of the
//!    checks"; `isLagAlwaysNotZero`), so a window that caught up also masks a rewind or a
//!    frozen commit that followed. Also OK while the window holds fewer than 2 samples:
//!    nothing can be judged from one point.
//! 2. **REWIND** if the committed offset went *down* between any two consecutive samples of
//!    the window (Burrow: "offsets moving backwards"): someone reset the group or a consumer
//!    committed an old position; records will be processed again.
//! 3. **STOP** if the committed offset did not change across the whole window and no member
//!    of the group is assigned the partition (the consumer is gone; Burrow's STOP is "no commit
//!    for longer than the window spans").
//! 4. **STALL** if the committed offset did not change across the whole window while a member
//!    is assigned the partition, or membership is unknown (the consumer is alive but stuck —
//!    Burrow's "committing the same offset").
//! 5. **WARN** if the committed offset moves but the lag never decreased between consecutive
//!    samples (Burrow: "lag is increasing": the consumer is slower than the producers).
//! 6. **OK** otherwise.
//!
//! **ERR** is not produced here: an adapter marks a partition ERR when its offsets could not
//! be read. A group's status is its worst partition's, except that STOP, STALL and REWIND
//! roll up to ERR, as in Burrow ([`group_status`]).
//!
//! # Lag in seconds
//!
//! The lag of a partition in seconds is how long ago the first unconsumed record (the one at
//! the committed offset) was produced. An adapter that can read that record's timestamp uses
//! it ([`LagSecondsSource::Exact`]). Otherwise the [`OffsetTimeTable`] of sampled
//! (end offset, time) points says when the end offset passed the committed offset
//! ([`LagSecondsSource::Interpolated`]); a committed offset older than the oldest point only
//! gets a lower bound ([`LagSecondsSource::LowerBound`]).

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParamError;

/// Samples per partition window when none is configured (Burrow's default `intervals`).
pub const DEFAULT_WINDOW: usize = 10;
/// Points per offset→time table when none is configured.
pub const DEFAULT_TABLE_POINTS: usize = 120;

/// Burrow-style status of a partition or a group; see the [module docs](self) for the rules.
/// Serialised in upper case (`"OK"`, `"WARN"`, ...), as Burrow prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Keeping up, or nothing to consume.
    Ok,
    /// Consuming, but the lag is not going down.
    Warn,
    /// The group's status when any partition is STOP, STALL or REWIND, or a partition whose
    /// offsets could not be read.
    Err,
    /// No member consumes the partition and its committed offset does not move.
    Stop,
    /// A member is assigned the partition but its committed offset does not move.
    Stall,
    /// The committed offset went backwards.
    Rewind,
}

impl Status {
    /// All statuses, best first (the order of their severity codes).
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Warn,
        Status::Err,
        Status::Stop,
        Status::Stall,
        Status::Rewind,
    ];

    /// The status as printed: `OK`, `WARN`, `ERR`, `STOP`, `STALL`, `REWIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Err => "ERR",
            Status::Stop => "STOP",
            Status::Stall => "STALL",
            Status::Rewind => "REWIND",
        }
    }

    /// Burrow's numeric code (OK 1, WARN 2, ERR 3, STOP 4, STALL 5, REWIND 6), which
    /// dashboards built on burrow-exporter plot.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 1,
            Status::Warn => 2,
            Status::Err => 3,
            Status::Stop => 4,
            Status::Stall => 5,
            Status::Rewind => 6,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group's status from its partitions' (Burrow's rollup): the worst one, with STOP, STALL
/// and REWIND reported as ERR; OK for a group with no partitions.
pub fn group_status(partitions: impl IntoIterator<Item = Status>) -> Status {
    partitions
        .into_iter()
        .map(|s| match s {
            Status::Stop | Status::Stall | Status::Rewind => Status::Err,
            other => other,
        })
        .max()
        .unwrap_or(Status::Ok)
}

/// Whether a member of the group is assigned a partition, which tells STOP from STALL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A member of the group holds the partition.
    Assigned,
    /// The group has no member holding the partition (or no members at all).
    Unassigned,
    /// The assignment could not be read (treated like `Assigned`: STALL, not STOP).
    Unknown,
}

/// One observation of a partition for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the offsets were read, in seconds on any clock that only moves forward.
    pub time_secs: f64,
    /// The group's committed offset (the next record to process); `None` if the group has
    /// committed nothing for the partition.
    pub committed: Option<i64>,
    /// The log-start offset (low watermark): where a group without a commit would start.
    pub start: i64,
    /// The log-end offset (high watermark): the offset the next produced record will get.
    pub end: i64,
}

impl Sample {
    /// Records between the consumer's position and the end of the log; a group without a
    /// commit counts from the log start. Never negative.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.start)).max(0)
    }
}

/// A sample that cannot follow the ones before it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// The time is not finite or does not move forward.
    #[error("sample time {time} is not after the previous sample's {previous}")]
    TimeNotIncreasing {
        /// The rejected time.
        time: f64,
        /// The latest accepted time.
        previous: f64,
    },
    /// An offset is negative, or the start is past the end.
    #[error("invalid offsets: start {start}, end {end}, committed {committed:?}")]
    InvalidOffsets {
        /// Log start.
        start: i64,
        /// Log end.
        end: i64,
        /// Committed offset.
        committed: Option<i64>,
    },
}

/// What a window says about a partition now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Latest lag in records.
    pub lag: i64,
    /// Status by the rules of the [module docs](self).
    pub status: Status,
    /// Records produced per second over the window; `None` with fewer than 2 samples.
    pub production_rate: Option<f64>,
    /// Records committed per second over the window (net; 0 when commits went backwards);
    /// `None` with fewer than 2 samples or without commits at both ends of the window.
    pub consumption_rate: Option<f64>,
    /// Seconds until the lag reaches 0 at the current rates: 0 with no lag, `None` when the
    /// consumer is not gaining on the producers (or rates are unknown).
    pub time_to_drain_secs: Option<f64>,
    /// Samples the status was judged on.
    pub samples: usize,
}

/// The last `capacity` samples of one partition for one group.
#[derive(Debug, Clone)]
pub struct PartitionWindow {
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl PartitionWindow {
    /// A window of `capacity` samples (at least 2: rates and rules compare samples).
    pub fn new(capacity: usize) -> Result<Self, ParamError> {
        if capacity < 2 {
            return Err(ParamError::new(
                "window",
                format!("must hold at least 2 samples, got {capacity}"),
            ));
        }
        Ok(PartitionWindow {
            capacity,
            samples: VecDeque::with_capacity(capacity),
        })
    }

    /// Adds a sample, dropping the oldest once the window is full.
    pub fn push(&mut self, sample: Sample) -> Result<(), SampleError> {
        if let Some(last) = self.samples.back() {
            // Written so that NaN is rejected too.
            let forward =
                sample.time_secs.partial_cmp(&last.time_secs) == Some(std::cmp::Ordering::Greater);
            if !forward || !sample.time_secs.is_finite() {
                return Err(SampleError::TimeNotIncreasing {
                    time: sample.time_secs,
                    previous: last.time_secs,
                });
            }
        } else if !sample.time_secs.is_finite() {
            return Err(SampleError::TimeNotIncreasing {
                time: sample.time_secs,
                previous: f64::NEG_INFINITY,
            });
        }
        if sample.start < 0 || sample.end < sample.start || sample.committed.is_some_and(|c| c < 0)
        {
            return Err(SampleError::InvalidOffsets {
                start: sample.start,
                end: sample.end,
                committed: sample.committed,
            });
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        Ok(())
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Whether the window holds `capacity` samples.
    pub fn is_full(&self) -> bool {
        self.samples.len() == self.capacity
    }

    /// Judges the window; `None` while it is empty.
    pub fn assess(&self, membership: Membership) -> Option<Assessment> {
        let last = *self.samples.back()?;
        let first = *self.samples.front()?;
        let lag = last.lag();
        let n = self.samples.len();
        let dt = last.time_secs - first.time_secs;
        let (production_rate, consumption_rate) = if n >= 2 && dt > 0.0 {
            let produced = (last.end - first.end) as f64 / dt;
            let consumed = match (first.committed, last.committed) {
                (Some(a), Some(b)) => Some(((b - a) as f64 / dt).max(0.0)),
                _ => None,
            };
            (Some(produced.max(0.0)), consumed)
        } else {
            (None, None)
        };
        let time_to_drain_secs = if lag == 0 {
            Some(0.0)
        } else {
            match (production_rate, consumption_rate) {
                (Some(p), Some(c)) if c > p => Some(lag as f64 / (c - p)),
                _ => None,
            }
        };
        Some(Assessment {
            lag,
            status: self.status(membership),
            production_rate,
            consumption_rate,
            time_to_drain_secs,
            samples: n,
        })
    }

    fn status(&self, membership: Membership) -> Status {
        // Burrow's rule 1: lag zero anywhere in the window (the latest sample included).
        if self.samples.len() < 2 || self.samples.iter().any(|s| s.lag() == 0) {
            return Status::Ok;
        }
        let pairs = || self.samples.iter().zip(self.samples.iter().skip(1));
        let rewound = pairs().any(|(a, b)| match (a.committed, b.committed) {
            (Some(x), Some(y)) => y < x,
            // A commit that disappeared (group offsets deleted or expired) is a reset too.
            (Some(_), None) => true,
            _ => false,
        });
        if rewound {
            return Status::Rewind;
        }
        let unchanged = pairs().all(|(a, b)| a.committed == b.committed);
        if unchanged {
            return match membership {
                Membership::Unassigned => Status::Stop,
                Membership::Assigned | Membership::Unknown => Status::Stall,
            };
        }
        let never_decreased = pairs().all(|(a, b)| b.lag() >= a.lag());
        if never_decreased {
            return Status::Warn;
        }
        Status::Ok
    }
}

/// How a lag in seconds was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LagSecondsSource {
    /// From the timestamp of the first unconsumed record (or 0: nothing to consume).
    Exact,
    /// Interpolated between two sampled (end offset, time) points.
    Interpolated,
    /// The committed offset is older than the oldest sampled point: the true lag is at least
    /// this much.
    LowerBound,
}

impl LagSecondsSource {
    /// The name as printed: `exact`, `interpolated`, `lower_bound`.
    pub fn as_str(self) -> &'static str {
        match self {
            LagSecondsSource::Exact => "exact",
            LagSecondsSource::Interpolated => "interpolated",
            LagSecondsSource::LowerBound => "lower_bound",
        }
    }
}

/// An offset→time table of one partition: when its end offset was seen at which value.
///
/// Each distinct end offset keeps the first and last time it was seen: a record at offset `c`
/// did not exist yet while the end was ≤ `c` and existed once the end was > `c`, so it was
/// produced between the last sighting of the point below it and the first sighting of the
/// point above it; the table interpolates linearly inside that interval.
#[derive(Debug, Clone)]
pub struct OffsetTimeTable {
    capacity: usize,
    /// (end offset, first seen, last seen), offsets strictly increasing.
    points: VecDeque<(i64, f64, f64)>,
}

impl OffsetTimeTable {
    /// A table of at most `capacity` distinct end offsets (at least 2).
    pub fn new(capacity: usize) -> Result<Self, ParamError> {
        if capacity < 2 {
            return Err(ParamError::new(
                "table-points",
                format!("must hold at least 2 points, got {capacity}"),
            ));
        }
        Ok(OffsetTimeTable {
            capacity,
            points: VecDeque::with_capacity(capacity),
        })
    }

    /// Records that the end offset was `end` at `time_secs`. Times must not go backwards
    /// (a sample from the past is ignored); an end offset below the last one means the
    /// partition was recreated or truncated, and the table starts over.
    pub fn observe(&mut self, end: i64, time_secs: f64) {
        if !time_secs.is_finite() {
            return;
        }
        match self.points.back_mut() {
            Some(last) if time_secs < last.2 => {}
            Some(last) if end == last.0 => last.2 = time_secs,
            Some(last) if end < last.0 => {
                self.points.clear();
                self.points.push_back((end, time_secs, time_secs));
            }
            _ => {
                if self.points.len() == self.capacity {
                    self.points.pop_front();
                }
                self.points.push_back((end, time_secs, time_secs));
            }
        }
    }

    /// Number of distinct end offsets held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// When the record at `offset` was produced, estimated from the table; `None` if the
    /// table is empty or the record did not exist at the newest point.
    pub fn time_of(&self, offset: i64) -> Option<(f64, LagSecondsSource)> {
        let newest = self.points.back()?;
        if offset >= newest.0 {
            return None;
        }
        // First point whose end is past `offset`: the record existed from its first sighting.
        let above = self.points.partition_point(|p| p.0 <= offset);
        let (end_above, first_above, _) = self.points[above];
        if above == 0 {
            return Some((first_above, LagSecondsSource::LowerBound));
        }
        let (end_below, _, last_below) = self.points[above - 1];
        // Records end_below..end_above appeared during (last_below, first_above]; spread them
        // evenly, the k-th of n at k/n of the interval.
        let fraction = (offset + 1 - end_below) as f64 / (end_above - end_below) as f64;
        Some((
            last_below + fraction * (first_above - last_below),
            LagSecondsSource::Interpolated,
        ))
    }

    /// Seconds between `now_secs` and the production of the record at `offset` (never
    /// negative), with how it was obtained.
    pub fn lag_seconds(&self, offset: i64, now_secs: f64) -> Option<(f64, LagSecondsSource)> {
        self.time_of(offset)
            .map(|(t, source)| ((now_secs - t).max(0.0), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, committed: i64, end: i64) -> Sample {
        Sample {
            time_secs: t,
            committed: Some(committed),
            start: 0,
            end,
        }
    }

    fn window(samples: &[Sample]) -> PartitionWindow {
        let mut w = PartitionWindow::new(10).unwrap();
        for x in samples {
            w.push(*x).unwrap();
        }
        w
    }

    #[test]
    fn zero_lag_is_ok_even_when_nothing_moves() {
        let w = window(&[s(0.0, 5, 5), s(1.0, 5, 5), s(2.0, 5, 5)]);
        let a = w.assess(Membership::Unassigned).unwrap();
        assert_eq!((a.lag, a.status), (0, Status::Ok));
        assert_eq!(a.time_to_drain_secs, Some(0.0));
    }

    #[test]
    fn lag_zero_anywhere_in_the_window_is_ok_as_in_burrow() {
        // Caught up at t=1, then the commit froze while records arrived: without Burrow's
        // rule 1 this is STALL (or STOP); with it, OK until the zero leaves the window.
        let mut w = PartitionWindow::new(3).unwrap();
        for x in [s(0.0, 3, 5), s(1.0, 5, 5), s(2.0, 5, 9)] {
            w.push(x).unwrap();
        }
        assert_eq!(w.assess(Membership::Assigned).unwrap().status, Status::Ok);
        assert_eq!(w.assess(Membership::Unassigned).unwrap().status, Status::Ok);
        w.push(s(3.0, 5, 12)).unwrap();
        assert_eq!(w.assess(Membership::Assigned).unwrap().status, Status::Ok);
        w.push(s(4.0, 5, 15)).unwrap();
        assert_eq!(
            w.assess(Membership::Assigned).unwrap().status,
            Status::Stall,
            "the zero left the window"
        );

        // Checked before the rewind rule, as Burrow does: a window that reached lag 0 and was
        // then reset to an older offset is OK while the zero is in it.
        let rewound = window(&[s(0.0, 9, 9), s(1.0, 4, 10), s(2.0, 5, 11)]);
        assert_eq!(
            rewound.assess(Membership::Assigned).unwrap().status,
            Status::Ok
        );
        // And before the WARN rule: lag growing from zero is not "falling behind" yet.
        let growing = window(&[s(0.0, 5, 5), s(1.0, 6, 8), s(2.0, 7, 11)]);
        assert_eq!(
            growing.assess(Membership::Assigned).unwrap().status,
            Status::Ok
        );
        // No commit yet: the lag counts from the log start, zero on an empty log.
        let mut empty_then_filled = PartitionWindow::new(10).unwrap();
        for (t, end) in [(0.0, 0), (1.0, 4), (2.0, 8)] {
            empty_then_filled
                .push(Sample {
                    time_secs: t,
                    committed: None,
                    start: 0,
                    end,
                })
                .unwrap();
        }
        assert_eq!(
            empty_then_filled
                .assess(Membership::Unassigned)
                .unwrap()
                .status,
            Status::Ok
        );
    }

    #[test]
    fn frozen_commit_is_stop_without_member_and_stall_with_one() {
        let w = window(&[s(0.0, 5, 9), s(1.0, 5, 9), s(2.0, 5, 12)]);
        assert_eq!(
            w.assess(Membership::Unassigned).unwrap().status,
            Status::Stop
        );
        assert_eq!(
            w.assess(Membership::Assigned).unwrap().status,
            Status::Stall
        );
        assert_eq!(w.assess(Membership::Unknown).unwrap().status, Status::Stall);
    }

    #[test]
    fn backwards_commit_is_rewind() {
        let w = window(&[s(0.0, 5, 20), s(1.0, 8, 20), s(2.0, 3, 20), s(3.0, 6, 20)]);
        assert_eq!(
            w.assess(Membership::Assigned).unwrap().status,
            Status::Rewind
        );
    }

    #[test]
    fn moving_but_falling_behind_is_warn_and_catching_up_is_ok() {
        let behind = window(&[s(0.0, 0, 10), s(1.0, 5, 20), s(2.0, 10, 30)]);
        let a = behind.assess(Membership::Assigned).unwrap();
        assert_eq!(a.status, Status::Warn);
        assert_eq!(a.production_rate, Some(10.0));
        assert_eq!(a.consumption_rate, Some(5.0));
        assert_eq!(a.time_to_drain_secs, None);

        let catching_up = window(&[s(0.0, 0, 10), s(1.0, 8, 14), s(2.0, 16, 18)]);
        let a = catching_up.assess(Membership::Assigned).unwrap();
        assert_eq!(a.status, Status::Ok);
        // lag 2, net rate 8 - 4 = 4/s.
        assert_eq!(a.time_to_drain_secs, Some(0.5));
    }

    #[test]
    fn one_sample_cannot_be_judged() {
        let a = window(&[s(0.0, 0, 10)])
            .assess(Membership::Unassigned)
            .unwrap();
        assert_eq!((a.lag, a.status, a.production_rate), (10, Status::Ok, None));
    }

    #[test]
    fn window_drops_oldest_samples() {
        let mut w = PartitionWindow::new(2).unwrap();
        w.push(s(0.0, 10, 20)).unwrap();
        w.push(s(1.0, 5, 20)).unwrap();
        assert_eq!(
            w.assess(Membership::Assigned).unwrap().status,
            Status::Rewind
        );
        w.push(s(2.0, 6, 20)).unwrap();
        // The rewind left the window; 5 → 6 with lag 15 → 14 is progress.
        assert_eq!(w.assess(Membership::Assigned).unwrap().status, Status::Ok);
    }

    #[test]
    fn rejects_bad_samples_and_windows() {
        assert!(PartitionWindow::new(1).is_err());
        let mut w = window(&[s(1.0, 0, 1)]);
        assert!(matches!(
            w.push(s(1.0, 0, 1)),
            Err(SampleError::TimeNotIncreasing { .. })
        ));
        assert!(matches!(
            w.push(s(2.0, -1, 1)),
            Err(SampleError::InvalidOffsets { .. })
        ));
    }

    #[test]
    fn no_commit_counts_from_log_start() {
        let x = Sample {
            time_secs: 0.0,
            committed: None,
            start: 4,
            end: 10,
        };
        assert_eq!(x.lag(), 6);
    }

    #[test]
    fn group_rollup_follows_burrow() {
        assert_eq!(group_status([]), Status::Ok);
        assert_eq!(group_status([Status::Ok, Status::Warn]), Status::Warn);
        assert_eq!(group_status([Status::Ok, Status::Stop]), Status::Err);
        assert_eq!(group_status([Status::Rewind, Status::Warn]), Status::Err);
    }

    #[test]
    fn table_interpolates_between_sightings() {
        let mut t = OffsetTimeTable::new(10).unwrap();
        t.observe(0, 0.0);
        t.observe(0, 10.0);
        t.observe(10, 20.0);
        t.observe(10, 30.0);
        // Records 0..10 appeared in (10, 20]: record 4 is the 5th of 10 → 15.
        assert_eq!(t.time_of(4), Some((15.0, LagSecondsSource::Interpolated)));
        assert_eq!(t.time_of(9), Some((20.0, LagSecondsSource::Interpolated)));
        assert_eq!(t.time_of(10), None);
        assert_eq!(
            t.lag_seconds(4, 40.0),
            Some((25.0, LagSecondsSource::Interpolated))
        );
    }

    proptest::proptest! {
        /// Whatever the sightings, estimated production times never decrease with the
        /// offset and stay within the observed span.
        #[test]
        fn table_estimates_are_monotone_and_bounded(
            steps in proptest::collection::vec((0i64..50, 0.0f64..10.0), 1..40),
            capacity in 2usize..20,
        ) {
            let mut t = OffsetTimeTable::new(capacity).unwrap();
            let (mut end, mut time) = (0i64, 0.0f64);
            for (grow, wait) in &steps {
                end += grow;
                time += wait;
                t.observe(end, time);
            }
            let mut previous = f64::NEG_INFINITY;
            for offset in 0..end {
                let (at, _) = t.time_of(offset).expect("every written offset has a time");
                proptest::prop_assert!(at >= previous, "offset {offset}: {at} < {previous}");
                proptest::prop_assert!((0.0..=time).contains(&at));
                previous = at;
            }
            proptest::prop_assert_eq!(t.time_of(end), None);
        }
    }

    #[test]
    fn table_gives_a_lower_bound_before_its_first_point_and_resets_on_truncation() {
        let mut t = OffsetTimeTable::new(2).unwrap();
        t.observe(5, 1.0);
        t.observe(8, 2.0);
        t.observe(12, 3.0);
        // Capacity 2: the point for 5 was dropped; offset 6 existed at 2.0 at the latest.
        assert_eq!(t.time_of(6), Some((2.0, LagSecondsSource::LowerBound)));
        t.observe(3, 4.0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.time_of(1), Some((4.0, LagSecondsSource::LowerBound)));
    }
}
