//! Who is alive and when to act: one member's own judgement from the heartbeats it reads.
//!
//! The control log's validity rules ([`super::control`]) never look at time; this module
//! decides only *when* a member acts on its reading of the log, and a wrong judgement costs
//! time, never order:
//! - **When to claim** ([`Membership::should_claim`]): when no term was ever claimed, or the
//!   decider's last heartbeat is older than the lease. A member that has just started counts
//!   the lease from its own start, so it never claims over a decider it has not had time to
//!   hear from. Several members may claim the same term; the log keeps the first.
//! - **Whom a move waits for** ([`Membership::waiting_for`]): every member *known* when the
//!   move was proposed (heard within the forget horizon, ten member timeouts) that has not
//!   answered ready. A move never commits without the fence of a known member: one that is
//!   silent for the member timeout makes its moves abort ([`Membership::unaccounted`]) and no
//!   new move is proposed until it is heard again or forgotten. Why not complete without it:
//!   records it handed to its Kafka client before it stopped may still land on the old
//!   partition, after the others' fences. Once it is forgotten they cannot: its client gives
//!   up on a record after the message timeout, which coordinated producers cap below the
//!   horizon ([`super::coordinator::CoordinationConfig::max_message_timeout`]). A member that
//!   leaves cleanly ([`Membership::leave`]) is forgotten at once.
//!
//! Times are seconds on the member's own monotonic clock ("when I read the heartbeat"), so
//! clocks of different machines are never compared.

use rustc_hash::FxHashMap;

use super::control::MemberId;
use crate::ParamError;

/// Member timeouts of silence after which a member is forgotten (the horizon).
pub const FORGET_AFTER_TIMEOUTS: u32 = 10;

/// Liveness as one member sees it; see the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    me: MemberId,
    lease_secs: f64,
    member_timeout_secs: f64,
    started: f64,
    last_seen: FxHashMap<MemberId, f64>,
    /// Members that left, and when this member read it: a heartbeat of theirs that lands
    /// after the leave (written before it) must not make them known again.
    left: FxHashMap<MemberId, f64>,
}

impl Membership {
    /// Member `me`, started at `now`; the decider is replaced after `lease_secs` of silence,
    /// another member stops being waited for after `member_timeout_secs` of silence.
    pub fn new(
        me: MemberId,
        lease_secs: f64,
        member_timeout_secs: f64,
        now: f64,
    ) -> Result<Self, ParamError> {
        for (name, v) in [
            ("lease", lease_secs),
            ("member-timeout", member_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ParamError::new(
                    name,
                    format!("must be a positive number of seconds, got {v}"),
                ));
            }
        }
        let mut last_seen = FxHashMap::default();
        last_seen.insert(me, now);
        Ok(Self {
            me,
            lease_secs,
            member_timeout_secs,
            started: now,
            last_seen,
            left: FxHashMap::default(),
        })
    }

    /// A heartbeat of `member` read at `now` (its own heartbeats too: reading them back is what
    /// shows this member that the log still takes its writes).
    pub fn heartbeat(&mut self, member: MemberId, now: f64) {
        if self.left.contains_key(&member) {
            return;
        }
        let seen = self.last_seen.entry(member).or_insert(now);
        *seen = seen.max(now);
    }

    /// Whether `member` was heard from within the member timeout.
    pub fn is_live(&self, member: MemberId, now: f64) -> bool {
        self.last_seen
            .get(&member)
            .is_some_and(|&t| now - t <= self.member_timeout_secs)
    }

    /// Silence after which a member is forgotten: [`FORGET_AFTER_TIMEOUTS`] member timeouts.
    pub fn horizon_secs(&self) -> f64 {
        f64::from(FORGET_AFTER_TIMEOUTS) * self.member_timeout_secs
    }

    /// Members heard from within `secs` of `now`, in id order.
    fn heard_within(&self, secs: f64, now: f64) -> Vec<MemberId> {
        let mut heard: Vec<MemberId> = self
            .last_seen
            .iter()
            .filter(|&(_, &t)| now - t <= secs)
            .map(|(&m, _)| m)
            .collect();
        heard.sort_unstable();
        heard
    }

    /// Members heard from within the forget horizon, in id order: the ones a move proposed
    /// now waits for.
    pub fn known(&self, now: f64) -> Vec<MemberId> {
        self.heard_within(self.horizon_secs(), now)
    }

    /// Other members that are known but silent for more than the member timeout, in id order:
    /// while there is one, moves pause (see the module docs).
    pub fn unaccounted(&self, now: f64) -> Vec<MemberId> {
        self.known(now)
            .into_iter()
            .filter(|&m| m != self.me && !self.is_live(m, now))
            .collect()
    }

    /// `member` left cleanly: every record it sent is acknowledged or failed, and it sends no
    /// more, so nothing of it can land later. It is forgotten at once (a move that waited for
    /// its ready aborts; see [`Membership::waiting_for`]).
    pub fn leave(&mut self, member: MemberId, now: f64) {
        if member != self.me {
            self.last_seen.remove(&member);
            self.left.insert(member, now);
        }
    }

    /// Members heard from within the member timeout, in id order.
    pub fn live(&self, now: f64) -> Vec<MemberId> {
        self.heard_within(self.member_timeout_secs, now)
    }

    /// Whether this member should claim the next term, given the decider of the term in force.
    pub fn should_claim(&self, decider: Option<MemberId>, now: f64) -> bool {
        match decider {
            Some(d) if d == self.me => false,
            Some(d) => {
                let heard = self.last_seen.get(&d).copied().unwrap_or(self.started);
                now - heard.max(self.started) > self.lease_secs
            }
            None => true,
        }
    }

    /// Where a move stands with the members known at its propose (`at_propose`) that have
    /// not answered ready: [`Wait::Ready`] when there are none, [`Wait::Lost`] when one of
    /// them is no longer live (silent for the member timeout, left, or forgotten: the move
    /// must abort, since its records on the old partition are not behind any fence), else
    /// [`Wait::For`] the live ones.
    pub fn waiting_for(&self, at_propose: &[MemberId], ready: &[MemberId], now: f64) -> Wait {
        let waiting: Vec<MemberId> = at_propose
            .iter()
            .copied()
            .filter(|m| !ready.contains(m))
            .collect();
        if let Some(&m) = waiting.iter().find(|&&m| !self.is_live(m, now)) {
            Wait::Lost(m)
        } else if waiting.is_empty() {
            Wait::Ready
        } else {
            Wait::For(waiting)
        }
    }

    /// Forgets members silent for the horizon (they died, and their Kafka clients have given
    /// up on every record they held) and members that left a horizon ago (no late heartbeat
    /// of theirs is still on its way); keeps the maps small. Answers them, in id order.
    pub fn forget_departed(&mut self, now: f64) -> Vec<MemberId> {
        let limit = self.horizon_secs();
        let me = self.me;
        let mut gone: Vec<MemberId> = self
            .last_seen
            .iter()
            .chain(&self.left)
            .filter(|&(&m, &t)| m != me && now - t > limit)
            .map(|(&m, _)| m)
            .collect();
        gone.sort_unstable();
        for m in &gone {
            self.last_seen.remove(m);
            self.left.remove(m);
        }
        gone
    }
}

/// Where a move stands with the members it waits for; see [`Membership::waiting_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Every member known at the propose answered ready.
    Ready,
    /// Still waiting for these live members.
    For(Vec<MemberId>),
    /// This member, known at the propose and not ready, is silent, left or forgotten: abort.
    Lost(MemberId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_timeouts_are_named() {
        let e = Membership::new(1, 0.0, 1.0, 0.0).unwrap_err();
        assert_eq!(e.name, "lease");
        let e = Membership::new(1, 1.0, f64::NAN, 0.0).unwrap_err();
        assert_eq!(e.name, "member-timeout");
    }

    #[test]
    fn a_move_waits_for_known_members_and_is_lost_with_a_silent_one() {
        let mut m = Membership::new(1, 3.0, 2.0, 0.0).unwrap();
        for (who, at) in [(2, 0.5), (3, 0.5), (4, 0.5)] {
            m.heartbeat(who, at);
        }
        let at_propose = m.known(1.0);
        assert_eq!(at_propose, [1, 2, 3, 4]);
        assert!(m.unaccounted(1.0).is_empty());
        m.heartbeat(1, 2.5);
        m.heartbeat(2, 2.5);
        m.heartbeat(4, 2.5);
        assert_eq!(
            m.waiting_for(&at_propose, &[1, 2], 2.5),
            Wait::For(vec![3, 4])
        );
        // 3 went silent at 0.5: past the 2 s member timeout at 3.0 the move cannot commit
        // without it, and moves pause until it is heard again or forgotten.
        assert_eq!(m.waiting_for(&at_propose, &[1, 2], 3.0), Wait::Lost(3));
        assert_eq!(m.waiting_for(&at_propose, &[1, 2, 3, 4], 3.0), Wait::Ready);
        assert_eq!(m.unaccounted(3.0), [3]);
        assert_eq!(m.known(20.4), [1, 2, 3, 4]);
        assert_eq!(m.known(20.6), [1, 2, 4]);
        // 4 leaves cleanly: forgotten at once, and a move that waited for it is lost; a
        // heartbeat it wrote before leaving and that is read after does not bring it back.
        m.leave(4, 3.0);
        assert_eq!(m.waiting_for(&[1, 2, 4], &[1, 2], 3.0), Wait::Lost(4));
        m.heartbeat(4, 3.1);
        assert!(!m.is_live(4, 3.1) && m.unaccounted(3.1) == [3]);
        m.leave(1, 3.0);
        assert!(m.is_live(1, 2.5), "a member never forgets itself");
        assert_eq!(m.forget_departed(20.6), [3]);
        assert_eq!(m.forget_departed(22.8), [2]);
        // A member that left is forgotten a horizon after its leave (a late heartbeat of it
        // is ignored until then).
        assert_eq!(m.forget_departed(23.1), [4]);
        assert_eq!(m.live(23.1), Vec::<MemberId>::new());
        assert!(
            m.last_seen.contains_key(&1),
            "a member never forgets itself"
        );
    }

    proptest! {
        /// Against a decider heartbeating every `beat` seconds for `alive` seconds, a member
        /// never claims while the last heartbeat is within the lease, and claims once it is
        /// older than the lease (never before having waited a lease from its own start).
        #[test]
        fn claims_exactly_when_the_decider_is_silent_for_a_lease(
            lease in 0.5f64..5.0,
            beat in 0.05f64..0.5,
            alive in 0.0f64..20.0,
            start in 0.0f64..10.0,
            checks in prop::collection::vec(0.0f64..40.0, 1..50),
        ) {
            let mut me = Membership::new(1, lease, lease, start).unwrap();
            let mut checks = checks;
            checks.sort_by(f64::total_cmp);
            let mut t = 0.0;
            let mut last_beat: Option<f64> = None;
            for now in checks.into_iter().filter(|&c| c >= start) {
                while t <= now && t <= alive {
                    if t >= start {
                        me.heartbeat(2, t);
                        last_beat = Some(t);
                    }
                    t += beat;
                }
                let heard = last_beat.unwrap_or(start).max(start);
                prop_assert_eq!(me.should_claim(Some(2), now), now - heard > lease);
                prop_assert!(!me.should_claim(Some(1), now));
                prop_assert!(me.should_claim(None, now));
            }
        }
    }
}
