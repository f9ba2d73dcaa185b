//! The engine's side of coordination: routing records along the control log, and acting on
//! what the log says (the protocol and its bookkeeping are
//! [`keyshift_core::protocol::coordinator`]).
//!
//! Three things drive a member, all under the engine lock:
//! - the caller's records ([`Inner::submit_coordinated`]): routed along the log's committed
//!   route, held while a move of their key is pending; the decider also feeds its strategy and
//!   turns the strategy's moves into proposals;
//! - the control log's tail ([`Inner::on_control`], on the tail's thread): holds, fences,
//!   installs and releases;
//! - a ticker on the producer's runtime ([`Inner::tick`]): heartbeats, claims, and the
//!   decider's commits and aborts.
//!
//! Writes to the control topic are awaited on the runtime; a failed one is counted, logged and
//! retried where the protocol needs it (a ready, a commit or abort at the next tick, a claim),
//! or undone (a proposal: the strategy follows the log again).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use keyshift_core::protocol::control::{member_key, Control, Effect, MemberId, MoveId};
use keyshift_core::protocol::coordinator::Action;
use keyshift_core::protocol::epoch::EPOCH_KEY;
use keyshift_core::protocol::Step;
use keyshift_core::strategy::Move;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;

use super::engine::{Inner, State, Submitted};
use super::error::ProduceError;

/// How often a member writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often a member looks at the time (heartbeats, claims, the decider's open moves).
const TICK: Duration = Duration::from_millis(100);

impl Inner {
    /// [`Inner::submit`] of a coordinated member; see the module docs.
    #[allow(clippy::type_complexity)]
    pub(super) fn submit_coordinated(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        value: &[u8],
        headers: Vec<(String, Vec<u8>)>,
        now: f64,
    ) -> Result<Submitted, (ProduceError, Vec<(String, Vec<u8>)>)> {
        let coord = st.coord.as_mut().expect("coordinated");
        if coord.leaving {
            return Err((
                ProduceError::Closed {
                    topic: self.topic.clone(),
                },
                headers,
            ));
        }
        if let Some(silent) = coord.out_of_touch(now) {
            return Err((
                ProduceError::OutOfTouch {
                    topic: self.topic.clone(),
                    control_topic: self.control.as_ref().map_or("", |c| c.name()).to_owned(),
                    silent: Duration::from_secs_f64(silent.min(1e9)),
                },
                headers,
            ));
        }
        if !coord.is_decider() {
            coord.note(key);
        } else {
            // The decider's strategy sees its records, and where it wants a key is a proposal,
            // not a route (the log routes): its moves of other keys, and this key's own place
            // when that differs from the log's (a strategy without routes, like `hash` after
            // a rollback, so brings moved keys home).
            let mut wanted = st.strategy.route(key, now);
            if let Some(&pinned) = st.pins.get(key) {
                wanted = pinned;
            }
            let mut moves = st.strategy.drain_moves();
            st.counters.moves += moves.len() as u64;
            let (current, _, _) = coord.current(key);
            if wanted != current && !moves.iter().any(|m| *m.key == *key) {
                moves.push(Move {
                    key: key.into(),
                    from: current,
                    to: wanted,
                    at: now,
                });
            }
            if !moves.is_empty() {
                for proposal in coord.proposals(moves, now) {
                    self.control_write(proposal);
                }
            }
        }
        let coord = st.coord.as_ref().expect("coordinated");
        let migrator = st
            .migrator
            .as_mut()
            .expect("coordinated producers keep order");
        let partition = migrator.current(key);
        if coord.holds(key) || st.held.contains_key(key) {
            return Ok(self.hold(st, key, partition, value, headers));
        }
        if st.growth.is_some() && self.growth_holds(st, key, true) {
            // Its home changes in the growth whose epoch fences are being written.
            return Ok(self.hold(st, key, partition, value, headers));
        }
        let migrator = st.migrator.as_mut().expect("checked above");
        match migrator.on_record(key, partition) {
            Step::Send { partition, header } => {
                self.send_direct(st, key, partition, header, value, headers)
            }
            // The migrator never starts a fence for its current partition.
            _ => Ok(self.hold(st, key, partition, value, headers)),
        }
    }

    /// One record of the control log, read by the tail thread, with its effect.
    pub(super) fn on_control(self: &Arc<Self>, record: &Control, effect: &Effect) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = self.origin.elapsed().as_secs_f64();
        let Some(coord) = st.coord.as_mut() else {
            return;
        };
        if let Control::Heartbeat { member, load, .. } = record {
            // The decider balances every member's traffic, not only its own.
            if *member != coord.me && coord.is_decider() {
                st.strategy.absorb(&load.partitions, &load.keys, now);
            }
        }
        let action = coord.apply(record, effect, now);
        let obsolete = coord.take_obsolete();
        if coord.is_decider() {
            for log_key in obsolete {
                self.control_tombstone(log_key);
            }
        }
        match action {
            Action::None | Action::Joined => {}
            Action::NewTerm {
                mine,
                released,
                growth_aborted,
            } => {
                if mine {
                    tracing::info!(topic = %self.topic, term = coord.term, member = coord.me, "this producer decides moves now");
                }
                if growth_aborted {
                    self.growth_called_off(st);
                }
                for key in released {
                    self.follow_log(st, &key, now);
                    self.release(st, &key);
                }
            }
            Action::Grow { .. } => {
                self.join_growth(st);
                self.decide(st);
            }
            Action::Grown(epoch) => self.apply_epoch(st, epoch),
            Action::GrowthReleased => self.growth_called_off(st),
            Action::Hold(key) => {
                // The key's records queue behind the move as they arrive (`coord.holds`).
                self.write_member_fence(st, &key);
                self.decide(st);
            }
            Action::Decide => self.decide(st),
            Action::Install(key, entry) => {
                let installed = st
                    .migrator
                    .as_mut()
                    .map(|m| m.install(&key, entry))
                    .unwrap_or(Ok(()));
                if let Err(e) = installed {
                    // The log names a partition this topic lacks: sending anywhere would
                    // break the key's order, so its records fail.
                    tracing::error!(topic = %self.topic, error = %e, "committed route refused");
                    self.fail_held(st, &key, || ProduceError::RouteState {
                        topic: self.topic.clone(),
                        key: String::from_utf8_lossy(&key).into_owned(),
                        routes_topic: self.control.as_ref().map_or("", |c| c.name()).to_owned(),
                        attempts: 1,
                        source: Box::new(KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::InvalidPartitions,
                        )),
                    });
                    return;
                }
                self.follow_log(st, &key, now);
                self.release(st, &key);
            }
            Action::Release(key) => {
                self.follow_log(st, &key, now);
                self.release(st, &key);
            }
            Action::Unproposed(key, why) => {
                tracing::debug!(topic = %self.topic, key = %String::from_utf8_lossy(&key), ?why, "own proposal ignored by the control log");
                self.follow_log(st, &key, now);
            }
        }
    }

    /// Points the strategy's route of `key` at the log's route (after a commit, an abort, or a
    /// proposal that did not count), so the decider's model matches what producers do.
    fn follow_log(&self, st: &mut State, key: &[u8], now: f64) {
        if let Some(coord) = st.coord.as_ref() {
            let (partition, _, _) = coord.current(key);
            st.strategy.adopt(key, partition, now);
        }
    }

    /// Writes this member's fence for the pending move of `key` (none once its ready is written).
    fn write_member_fence(self: &Arc<Self>, st: &mut State, key: &[u8]) {
        let Some(coord) = st.coord.as_ref() else {
            return;
        };
        let Some((id, from, header, route)) = coord.fence_of(key) else {
            return;
        };
        self.emit_member_fence(st, key, id, from, header, route);
    }

    /// librdkafka took (or refused) this member's fence of a coordinated move.
    pub(super) fn member_fence_sent(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        id: MoveId,
        started: Instant,
        result: Result<DeliveryFuture, KafkaError>,
    ) {
        let future = match result {
            Ok(future) => future,
            Err(err) => {
                st.counters.fence_failures += 1;
                self.retry_member_fence(key.into(), id, err);
                return;
            }
        };
        let inner = Arc::clone(self);
        let key: Box<[u8]> = key.into();
        let me = st.coord.as_ref().map_or(0, |c| c.me);
        self.runtime.handle.spawn(async move {
            match future.await {
                Ok(Ok(delivery)) => {
                    let mut guard = inner.lock();
                    let st = &mut *guard;
                    // A produce round trip: the unit a moved key's hold time is judged in.
                    st.fence_rtt.record_secs(started.elapsed().as_secs_f64());
                    // The decider counts its own fence at once and writes no ready.
                    if st
                        .coord
                        .as_mut()
                        .is_some_and(|c| c.own_fence_acked(id, delivery.offset))
                    {
                        inner.decide(st);
                        return;
                    }
                    drop(guard);
                    inner.control_write(Control::Ready {
                        id,
                        member: me,
                        fence_offset: delivery.offset,
                    });
                }
                Ok(Err((err, _))) => {
                    inner.lock().counters.fence_failures += 1;
                    inner.retry_member_fence(key, id, err);
                }
                Err(_canceled) => inner.retry_member_fence(key, id, KafkaError::Canceled),
            }
        });
    }

    /// Writes the member fence again after a backoff, while the move is still pending.
    fn retry_member_fence(self: &Arc<Self>, key: Box<[u8]>, id: MoveId, err: KafkaError) {
        tracing::warn!(topic = %self.topic, key = %String::from_utf8_lossy(&key), error = %err, "member fence failed; retrying");
        let inner = Arc::clone(self);
        let delay = self.fence_backoff;
        self.runtime.handle.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut guard = inner.lock();
            let still = guard
                .coord
                .as_ref()
                .and_then(|c| c.pending.get(&key))
                .is_some_and(|p| p.id == id);
            if still {
                inner.write_member_fence(&mut guard, &key);
            }
        });
    }

    /// The decider's commits and aborts that are due now, and the growth it should propose.
    pub(super) fn decide(self: &Arc<Self>, st: &mut State) {
        let now = self.origin.elapsed().as_secs_f64();
        let Some(coord) = st.coord.as_mut() else {
            return;
        };
        for verdict in coord.verdicts(now) {
            match &verdict {
                Control::Abort { key, .. } if **key == *EPOCH_KEY => tracing::warn!(
                    topic = %self.topic,
                    unaccounted = ?coord.membership.unaccounted(now),
                    "calling the growth off: a producer it waits for is silent or left, or it \
                     was not ready within the move timeout; it is tried again once every \
                     producer is accounted for"
                ),
                Control::Abort { key, .. } => tracing::warn!(
                    topic = %self.topic,
                    key = %String::from_utf8_lossy(key),
                    unaccounted = ?coord.membership.unaccounted(now),
                    "aborting a move: a producer it waits for is silent or left, or it was not ready within the move timeout"
                ),
                _ => {}
            }
            self.control_write(verdict);
        }
        if let Some(grow) = coord.growth_proposal(now) {
            if let Control::Grow { from, to, .. } = &grow {
                tracing::info!(topic = %self.topic, from, to, "proposing the growth the producers asked for");
            }
            self.control_write(grow);
        }
    }

    /// Heartbeat, claim and the decider's due verdicts; runs every [`TICK`].
    pub(super) fn tick(self: &Arc<Self>) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = self.origin.elapsed().as_secs_f64();
        let Some(coord) = st.coord.as_mut() else {
            return;
        };
        if coord.leaving {
            return;
        }
        let unaccounted = coord.membership.unaccounted(now);
        if coord.is_decider() && unaccounted != st.unaccounted {
            if unaccounted.is_empty() {
                tracing::info!(topic = %self.topic, "every producer is accounted for again; moves resume");
            } else {
                tracing::warn!(
                    topic = %self.topic,
                    members = ?unaccounted,
                    forgotten_after = ?coord.config.forget_after(),
                    "a producer is silent: its moves are aborted and no key moves until it is heard again or forgotten"
                );
            }
        }
        st.unaccounted = unaccounted;
        let coord = st.coord.as_mut().expect("checked");
        if coord
            .last_heartbeat
            .is_none_or(|t| now - t >= HEARTBEAT.as_secs_f64())
        {
            coord.last_heartbeat = Some(now);
            let me = coord.me;
            let load = coord.load_summary(&st.counters.per_partition);
            self.control_write(Control::Heartbeat {
                member: me,
                load,
                written_us: micros(now),
            });
        }
        let coord = st.coord.as_mut().expect("checked");
        let next = coord.term + 1;
        if coord.should_claim(now) {
            coord.claimed = next;
            coord.counters.claims += 1;
            tracing::info!(topic = %self.topic, term = next, member = coord.me, decider = ?coord.decider, "claiming the decision");
            let me = coord.me;
            self.control_write(Control::Claim {
                term: next,
                member: me,
            });
        }
        let gone = coord.membership.forget_departed(now);
        if coord.is_decider() {
            // Departed members' last heartbeats would otherwise stay in the topic for good.
            for member in gone {
                self.control_tombstone(member_key(member));
            }
        }
        self.decide(st);
    }

    /// Tombstones `log_key` in the control topic on the runtime (the decider's cleanup, see
    /// `Coordinator::take_obsolete`); a failure is only counted and logged — the record stays,
    /// which costs space, never correctness.
    fn control_tombstone(self: &Arc<Self>, log_key: String) {
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            let Some(control) = inner.control.as_ref() else {
                return;
            };
            if let Err(err) = control.tombstone(&log_key).await {
                tracing::debug!(topic = %inner.topic, error = %err, "control tombstone failed");
                if let Some(c) = inner.lock().coord.as_mut() {
                    c.counters.control_write_failures += 1;
                }
            }
        });
    }

    /// Writes `record` to the control topic on the runtime; a failure is counted, logged and
    /// handled as the module docs say.
    pub(super) fn control_write(self: &Arc<Self>, record: Control) {
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            let Some(control) = inner.control.as_ref() else {
                return;
            };
            let Err(err) = control.write(&record).await else {
                return;
            };
            let mut guard = inner.lock();
            let st = &mut *guard;
            let now = inner.origin.elapsed().as_secs_f64();
            let Some(coord) = st.coord.as_mut() else {
                return;
            };
            coord.counters.control_write_failures += 1;
            tracing::warn!(topic = %inner.topic, error = %err, "control write failed");
            match record {
                Control::Propose { key, .. } => {
                    coord.proposing.remove(&key);
                    inner.follow_log(st, &key, now);
                }
                Control::Ready { id, .. } => {
                    // The fence is written; writing another one is harmless and simpler than
                    // remembering its offset.
                    let key = coord
                        .pending
                        .iter()
                        .find(|(_, p)| p.id == id)
                        .map(|(k, _)| k.clone());
                    if let Some(key) = key {
                        inner.retry_member_fence(key, id, KafkaError::Canceled);
                    }
                }
                Control::Commit { id, .. }
                | Control::Abort { id, .. }
                | Control::Grown { id, .. } => coord.verdict_unwritten(id),
                Control::Grow { .. } => coord.grow_unproposed(),
                Control::GrowReady { .. } | Control::Want { .. } => {
                    // Both are idempotent (same log key, same value): written again after a
                    // backoff while they still matter.
                    let again = match &record {
                        Control::GrowReady { id, .. } => {
                            coord.growth.as_ref().is_some_and(|g| g.log.id == *id)
                        }
                        _ => true,
                    };
                    if again {
                        let inner = Arc::clone(&inner);
                        inner.runtime.handle.clone().spawn(async move {
                            tokio::time::sleep(inner.fence_backoff).await;
                            inner.control_write(record);
                        });
                    }
                }
                Control::Claim { term, .. } => {
                    // Rewriting the same claim is harmless (same log key, same value).
                    if coord.claimed == term {
                        coord.claimed = term - 1;
                    }
                }
                Control::Heartbeat { .. } | Control::Leave { .. } => {}
            }
        });
    }

    /// Holds the keys of moves pending in the replayed log and writes this member's fences.
    pub(super) fn join_replayed_moves(self: &Arc<Self>) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let keys: Vec<Box<[u8]>> = st
            .coord
            .as_ref()
            .map(|c| c.pending.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.write_member_fence(st, &key);
        }
        self.join_growth(st);
    }

    /// Starts the tail of the control log and the ticker, then waits until this member has
    /// read its own first heartbeat back (see the module docs of `coordination`).
    pub(super) fn start_member(
        self: &Arc<Self>,
        replayed: crate::control::Replayed,
        timeout: Duration,
    ) -> Result<(), String> {
        let control = self.control.as_ref().expect("coordinated");
        let weak: Weak<Inner> = Arc::downgrade(self);
        let tail = control
            .tail(replayed, move |_offset, record, effect| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_control(record, effect);
                }
            })
            .map_err(|e| e.to_string())?;
        *self.tail.lock().unwrap_or_else(|p| p.into_inner()) = Some(tail);
        let weak: Weak<Inner> = Arc::downgrade(self);
        self.runtime.handle.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.tick();
                drop(inner);
                tokio::time::sleep(TICK).await;
            }
        });
        // The first heartbeat is written here, not by the ticker: the caller may be a task of
        // the very runtime the ticker needs.
        {
            let mut guard = self.lock();
            let now = self.origin.elapsed().as_secs_f64();
            let coord = guard.coord.as_mut().expect("coordinated");
            coord.last_heartbeat = Some(now);
            let me = coord.me;
            drop(guard);
            control
                .enqueue(&Control::Heartbeat {
                    member: me,
                    load: Default::default(),
                    written_us: micros(now),
                })
                .map_err(|e| e.to_string())?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.lock().coord.as_ref().is_some_and(|c| c.joined) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not read its own heartbeat back from the control log within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Seconds since the member's origin as the microseconds a heartbeat carries.
fn micros(seconds: f64) -> u64 {
    (seconds * 1e6) as u64
}

/// A member id unlikely to repeat across processes and restarts: wall-clock nanoseconds mixed
/// with the process id.
pub(super) fn new_member_id() -> MemberId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ (u64::from(std::process::id())).rotate_left(40);
    // Keep ids readable in logs and metrics (below 2^53, exact in JSON numbers).
    mixed & ((1 << 53) - 1)
}
