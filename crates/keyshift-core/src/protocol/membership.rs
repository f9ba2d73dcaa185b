//! Who is alive and when to act: one member's own judgement from the heartbeats it reads.
//!
//! The control log's validity rules ([`super::control`]) never look at time; this module
//! decides only *when* a member acts on its reading of the log, and a wrong judgement costs
//! time, never order:
//! - **When to claim** ([`Membership::should_claim`]): when no term was ever claimed, or the
//!   decider's last heartbeat is older than the lease. A member that has just started counts
//!   the lease from its own start, so it never claims over a decider it has not had time to
//!   hear from. Several members may claim the same term; the log keeps the first.
//! - **Whom a move waits for** ([`Membership::waiting_for`]): the members live when the move was
//!   proposed that have not answered ready and are still live. A member silent for the member
//!   timeout is dropped from the wait — the move completes without it (its late writes are the
//!   zombie case of `docs/routing.md`).
//!
//! Times are seconds on the member's own monotonic clock ("when I read the heartbeat"), so
//! clocks of different machines are never compared.

use rustc_hash::FxHashMap;

use super::control::MemberId;
use crate::ParamError;

/// Liveness as one member sees it; see the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    me: MemberId,
    lease_secs: f64,
    member_timeout_secs: f64,
    started: f64,
    last_seen: FxHashMap<MemberId, f64>,
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
        })
    }

    /// A heartbeat of `member` read at `now` (its own heartbeats too: reading them back is what
    /// shows this member that the log still takes its writes).
    pub fn heartbeat(&mut self, member: MemberId, now: f64) {
        let seen = self.last_seen.entry(member).or_insert(now);
        *seen = seen.max(now);
    }

    /// Whether `member` was heard from within the member timeout.
    pub fn is_live(&self, member: MemberId, now: f64) -> bool {
        self.last_seen
            .get(&member)
            .is_some_and(|&t| now - t <= self.member_timeout_secs)
    }

    /// Members heard from within the member timeout, in id order.
    pub fn live(&self, now: f64) -> Vec<MemberId> {
        let mut live: Vec<MemberId> = self
            .last_seen
            .keys()
            .copied()
            .filter(|&m| self.is_live(m, now))
            .collect();
        live.sort_unstable();
        live
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

    /// The members a move still waits for: live at its propose (`at_propose`), not in
    /// `ready`, and live now.
    pub fn waiting_for(
        &self,
        at_propose: &[MemberId],
        ready: &[MemberId],
        now: f64,
    ) -> Vec<MemberId> {
        at_propose
            .iter()
            .copied()
            .filter(|m| !ready.contains(m) && self.is_live(*m, now))
            .collect()
    }

    /// Forgets members silent for ten member timeouts (they left; keeps the map small) and
    /// answers them, in id order.
    pub fn forget_departed(&mut self, now: f64) -> Vec<MemberId> {
        let limit = 10.0 * self.member_timeout_secs;
        let me = self.me;
        let mut gone: Vec<MemberId> = self
            .last_seen
            .iter()
            .filter(|&(&m, &t)| m != me && now - t > limit)
            .map(|(&m, _)| m)
            .collect();
        gone.sort_unstable();
        for m in &gone {
            self.last_seen.remove(m);
        }
        gone
    }
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
    fn a_move_waits_for_live_members_that_are_not_ready() {
        let mut m = Membership::new(1, 3.0, 2.0, 0.0).unwrap();
        for (who, at) in [(2, 0.5), (3, 0.5), (4, 0.5)] {
            m.heartbeat(who, at);
        }
        let at_propose = m.live(1.0);
        assert_eq!(at_propose, [1, 2, 3, 4]);
        m.heartbeat(1, 2.5);
        m.heartbeat(2, 2.5);
        m.heartbeat(4, 2.5);
        // 3 went silent at 0.5: past the 2 s member timeout at 3.0, the move stops waiting.
        assert_eq!(m.waiting_for(&at_propose, &[1, 2], 3.0), [4]);
        assert_eq!(m.forget_departed(30.0), [2, 3, 4]);
        assert_eq!(m.live(30.0), Vec::<MemberId>::new());
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
