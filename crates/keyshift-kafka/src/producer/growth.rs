//! Growing the partitions keys are homed on, with one epoch fence per old partition
//! ([`keyshift_core::protocol::epoch`] has the protocol and why it keeps per-key order).
//!
//! [`super::KeyshiftProducer::grow`] writes the epoch fences through the producer's one
//! idempotent client, so each lands behind every record already sent to its partition. Until
//! all are acknowledged (and, with durable routes, the epoch is recorded in the route topic
//! under [`EPOCH_KEY`]) records of keys whose home changes and that have no route of their own
//! wait in their key's hold queue — the same queue a moving key's records wait in; every
//! other key keeps flowing. Then the migrator homes keys on the new count, the strategy is
//! rebuilt for it (keys it had moved keep their partition), and the held keys are released to
//! their new home with the barrier of their old one.
//!
//! A fence that cannot be written calls the growth off: nothing was homed on the new count, so
//! the held records go where they would have gone before (an epoch fence with nobody waiting
//! on it is harmless). A failed write of the epoch to the route topic is retried until it
//! succeeds, the held keys waiting, because the record may have landed.
//!
//! Coordinated producers grow together through the control log
//! ([`keyshift_core::protocol::coordinator`] has the protocol): `grow` writes a *want* and
//! waits until the log commits an epoch that homes keys on at least that many partitions.
//! Every member — whichever was asked — joins the growth the decider proposes
//! ([`Inner::join_growth`]): it holds its remapped keys, writes its own epoch fences as above
//! and answers grow-ready with their offsets instead of recording the epoch itself; the grown
//! record applies the epoch (the barriers of every member) exactly as a lone producer applies
//! its own. A called-off growth releases the held keys where they went before; the want stays,
//! and the decider tries again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use keyshift_core::protocol::control::{Control, MoveId};
use keyshift_core::protocol::epoch::{Epoch, Growth, EPOCH_KEY};
use keyshift_core::protocol::Migrator;
use keyshift_core::strategy::build_with;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::engine::{After, Inner, State};
use super::error::ProduceError;

/// What a growth did, answered by [`super::KeyshiftProducer::grow`]; also the JSON body of
/// the gateway's `POST /admin/grow`, which `keyshift expand` reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowthReport {
    /// Partitions keys were homed on before.
    pub from: u32,
    /// Partitions keys are homed on now.
    pub to: u32,
    /// The epoch's number (`None` for an unfenced growth or a strategy that keeps no order).
    pub epoch: Option<u32>,
    /// Epoch fences written.
    pub fences: usize,
    /// Per old partition (index = partition), the offset of the epoch fence records of keys
    /// homed there before wait for: once a consumer group's committed offset of every old
    /// partition is past its barrier, no record of that group waits for the growth any more.
    /// Empty for an unfenced growth.
    pub barriers: Vec<i64>,
    /// Keys whose records waited for the growth to complete.
    pub held_keys: usize,
    /// Records that waited.
    pub held_records: u64,
    /// From the first fence sent to the switch, milliseconds.
    pub took_ms: f64,
}

/// A growth in progress.
pub(super) struct Running {
    growth: Growth,
    /// The coordinated growth this member takes part in (`None`: its own, uncoordinated).
    id: Option<MoveId>,
    /// This attempt's number: reports of an earlier attempt's fences are ignored.
    attempt: u64,
    /// Keys whose records wait for it.
    held: FxHashSet<Box<[u8]>>,
    held_records: u64,
    started: Instant,
    done: Option<oneshot::Sender<Result<GrowthReport, ProduceError>>>,
}

/// A caller of a coordinated `grow`, waiting for an epoch of at least `to` partitions.
pub(super) struct Waiter {
    to: u32,
    started: Instant,
    done: oneshot::Sender<Result<GrowthReport, ProduceError>>,
}

impl Running {
    /// Whether `key`'s records must wait: its home changes and it has no route of its own.
    fn holds(&self, inner: &Inner, migrator: &Migrator, key: &[u8]) -> bool {
        self.growth.remaps(inner.hasher(), key) && !migrator.has_entry(key)
    }
}

impl Inner {
    /// Whether a growth in progress holds `key`; if so the key is noted for release (and
    /// `new_record` counted).
    pub(super) fn growth_holds(&self, st: &mut State, key: &[u8], new_record: bool) -> bool {
        let (Some(run), Some(migrator)) = (st.growth.as_mut(), st.migrator.as_ref()) else {
            return false;
        };
        if !run.holds(self, migrator, key) {
            return false;
        }
        if !run.held.contains(key) {
            run.held.insert(key.into());
        }
        run.held_records += u64::from(new_record);
        true
    }

    /// Starts growing to `to` partitions; the receiver answers when it completed or failed.
    /// `fenced: false` homes keys on `to` at once, as a plain producer would.
    pub(super) fn start_growth(
        self: &Arc<Self>,
        to: u32,
        fenced: bool,
    ) -> Result<oneshot::Receiver<Result<GrowthReport, ProduceError>>, ProduceError> {
        let refuse = |reason: String| ProduceError::Growth {
            topic: self.topic.clone(),
            reason,
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        let from = self.partitions.load(Ordering::Relaxed);
        if to <= from {
            return Err(refuse(format!(
                "{to} partitions is not more than the {from} keys are homed on"
            )));
        }
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        if let (Some(coord), true) = (st.coord.as_ref(), fenced) {
            // The decider grows every member; this one asks and waits for the epoch.
            let want = Control::Want {
                member: coord.me,
                partitions: to,
            };
            tracing::info!(
                topic = %self.topic,
                from,
                to,
                "asking the producers of the topic to grow (a want in the control log)"
            );
            st.growth_waiters.push(Waiter {
                to,
                started,
                done: tx,
            });
            self.control_write(want);
            return Ok(rx);
        }
        if st.growth.is_some() {
            return Err(refuse("a growth is already in progress".into()));
        }
        let Some(migrator) = st.migrator.as_mut().filter(|_| fenced) else {
            // Unfenced, or a strategy that keeps no order: home keys on `to` now.
            if let Some(m) = st.migrator.as_mut() {
                m.grow_unfenced(to).map_err(|e| refuse(e.reason))?;
            }
            if let Some(c) = st.coord.as_mut() {
                c.grow_unfenced(to);
            }
            self.rehome(st, to)?;
            let _ = tx.send(Ok(GrowthReport {
                from,
                to,
                epoch: None,
                fences: 0,
                barriers: Vec::new(),
                held_keys: 0,
                held_records: 0,
                took_ms: started.elapsed().as_secs_f64() * 1e3,
            }));
            return Ok(rx);
        };
        let growth = Growth::start(migrator.epoch(), from, to).map_err(|e| refuse(e.reason))?;
        tracing::info!(
            topic = %self.topic,
            from,
            to,
            epoch = growth.number(),
            fences = growth.fences().len(),
            "growing: writing one epoch fence per old partition"
        );
        self.run_growth(st, growth, None, Some(tx));
        Ok(rx)
    }

    /// Holds the keys `growth` remaps from now on and writes its epoch fences.
    fn run_growth(
        self: &Arc<Self>,
        st: &mut State,
        growth: Growth,
        id: Option<MoveId>,
        done: Option<oneshot::Sender<Result<GrowthReport, ProduceError>>>,
    ) {
        let fences = growth.fences().to_vec();
        st.growth_attempts += 1;
        let attempt = st.growth_attempts;
        st.growth = Some(Running {
            growth,
            id,
            attempt,
            held: FxHashSet::default(),
            held_records: 0,
            started: Instant::now(),
            done,
        });
        for (index, f) in fences.into_iter().enumerate() {
            let after = After::EpochFence { index, attempt };
            self.emit_fence_then(st, EPOCH_KEY, f.partition, f.header, f.route, after);
        }
    }

    /// The running growth, if `attempt` is it.
    fn attempt(st: &mut State, attempt: u64) -> Option<&mut Running> {
        st.growth.as_mut().filter(|r| r.attempt == attempt)
    }

    /// Coordinated: takes part in the growth pending in the control log (read live, or
    /// replayed at start) — holds the keys it remaps and writes this member's epoch fences.
    pub(super) fn join_growth(self: &Arc<Self>, st: &mut State) {
        let Some((id, growth)) = st.coord.as_ref().and_then(|c| c.growth_plan()) else {
            return;
        };
        if st.growth.as_ref().is_some_and(|r| r.id == Some(id)) {
            return;
        }
        let (from, to) = growth.counts();
        if from != self.partitions.load(Ordering::Relaxed) {
            tracing::error!(
                topic = %self.topic,
                from,
                homed_on = self.partitions.load(Ordering::Relaxed),
                "the control log grows the topic from another partition count than this \
                 producer homes keys on (started with another --partitions?); not taking part, \
                 so the growth times out"
            );
            return;
        }
        tracing::info!(
            topic = %self.topic,
            from,
            to,
            epoch = growth.number(),
            fences = growth.fences().len(),
            "the producers grow the topic: writing this producer's epoch fences"
        );
        self.run_growth(st, growth, Some(id), None);
    }

    /// An epoch fence was handed to librdkafka (or refused).
    pub(super) fn epoch_fence_sent(
        self: &Arc<Self>,
        st: &mut State,
        index: usize,
        attempt: u64,
        result: Result<DeliveryFuture, KafkaError>,
    ) {
        let future = match result {
            Ok(f) => f,
            Err(err) => return self.growth_failed(st, index, attempt, &err.to_string()),
        };
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            let report = future.await;
            let mut guard = inner.lock();
            let st = &mut *guard;
            match report {
                Ok(Ok(delivery)) => inner.epoch_fence_acked(st, index, attempt, delivery.offset),
                Ok(Err((err, _))) => inner.growth_failed(st, index, attempt, &err.to_string()),
                Err(_canceled) => {
                    inner.growth_failed(st, index, attempt, "the fence's report was lost")
                }
            }
        });
    }

    fn epoch_fence_acked(
        self: &Arc<Self>,
        st: &mut State,
        index: usize,
        attempt: u64,
        offset: i64,
    ) {
        let Some(run) = Self::attempt(st, attempt) else {
            return;
        };
        let Some(epoch) = run.growth.acked(index, offset) else {
            return;
        };
        if let Some(id) = run.id {
            // Coordinated: the decider commits the epoch of every member's barriers.
            let Some(coord) = st.coord.as_mut() else {
                return;
            };
            if coord.own_growth_acked(id, &epoch.fences) {
                return self.decide(st);
            }
            let ready = Control::GrowReady {
                id,
                member: coord.me,
                fences: epoch.fences,
            };
            return self.control_write(ready);
        }
        if self.routes.is_some() {
            self.record_epoch(epoch, 0);
        } else {
            self.apply_epoch(st, epoch);
        }
    }

    /// Durable routes: writes the epoch to the route topic, then applies it; retried until
    /// acknowledged (it may have landed even when its report failed).
    fn record_epoch(self: &Arc<Self>, epoch: Epoch, failures: u32) {
        let Some(routes) = &self.routes else {
            return;
        };
        let value = epoch.encode();
        let sent = self
            .producer
            .send_result(routes.record(EPOCH_KEY, Some(&value)))
            .map_err(|(err, _)| err);
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            let outcome = match sent {
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((err, _))) => Err(err.to_string()),
                    Err(_) => Err("the write's report was lost".to_owned()),
                },
                Err(err) => Err(err.to_string()),
            };
            match outcome {
                Ok(()) => {
                    let mut guard = inner.lock();
                    inner.apply_epoch(&mut guard, epoch);
                }
                Err(error) => {
                    let failures = failures + 1;
                    tracing::warn!(
                        topic = %inner.topic,
                        failures,
                        %error,
                        "the epoch could not be recorded in the route topic; retrying"
                    );
                    tokio::time::sleep(inner.fence_backoff * failures.min(10)).await;
                    inner.record_epoch(epoch, failures);
                }
            }
        });
    }

    /// Every fence is written (and the epoch recorded, or, coordinated, committed in the
    /// control log): home keys on the new count and release the held keys to their new home.
    pub(super) fn apply_epoch(self: &Arc<Self>, st: &mut State, epoch: Epoch) {
        let run = st.growth.take();
        if run.is_none() && st.coord.is_none() {
            return;
        }
        let (from, to, number) = (epoch.from, epoch.to, epoch.number);
        let barriers = epoch.fences.clone();
        let grown = st.migrator.as_mut().map(|m| m.grow(epoch));
        if let Some(Err(e)) = grown {
            // Uncoordinated, it cannot happen: the growth started from the migrator's count
            // under this lock. Coordinated, this member homes keys on another count than the
            // log (a misconfigured --partitions): it cannot follow the epoch.
            tracing::error!(topic = %self.topic, error = %e.reason, "epoch not applied");
            return match run {
                Some(run) if st.coord.is_none() => {
                    let attempt = run.attempt;
                    st.growth = Some(run);
                    self.growth_failed(st, usize::MAX, attempt, &e.reason)
                }
                Some(run) => self.release_growth(st, run),
                None => {}
            };
        }
        if let Err(e) = self.rehome(st, to) {
            tracing::error!(topic = %self.topic, error = %e, "strategy not rebuilt");
        }
        let (held_keys, held_records, fences) = run.as_ref().map_or((0, 0, 0), |r| {
            (r.held.len(), r.held_records, r.growth.fences().len())
        });
        if let Some(run) = &run {
            for key in &run.held {
                self.send_held_home(st, key);
            }
        }
        let report = |started: Instant| GrowthReport {
            from,
            to,
            epoch: Some(number),
            fences,
            barriers: barriers.clone(),
            held_keys,
            held_records,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        tracing::info!(
            topic = %self.topic,
            from,
            to,
            epoch = number,
            held_keys,
            held_records,
            took_ms = run.as_ref().map(|r| r.started.elapsed().as_secs_f64() * 1e3),
            "grown: keys are homed on the new partition count"
        );
        if let Some(Running {
            done: Some(done),
            started,
            ..
        }) = run
        {
            let _ = done.send(Ok(report(started)));
        }
        // Coordinated callers of `grow` whose count this epoch reaches.
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
            st.growth_waiters.drain(..).partition(|w| w.to <= to);
        st.growth_waiters = waiting;
        for w in ready {
            let _ = w.done.send(Ok(report(w.started)));
        }
    }

    /// Coordinated: the pending growth was called off (a member it waited for is silent or
    /// left, its move timeout passed, or a new term began): the held keys go on as before.
    /// Callers of `grow` keep waiting: the want stays in the log and the decider tries again.
    pub(super) fn growth_called_off(self: &Arc<Self>, st: &mut State) {
        if let Some(run) = st.growth.take() {
            tracing::warn!(
                topic = %self.topic,
                held_keys = run.held.len(),
                "the growth was called off (a producer it waited for is silent or left, or \
                 it did not complete within the move timeout); it is tried again"
            );
            self.release_growth(st, run);
        }
    }

    /// Releases a growth's held keys where they went before it.
    fn release_growth(self: &Arc<Self>, st: &mut State, run: Running) {
        for key in &run.held {
            self.release(st, key);
        }
    }

    /// Re-offers a key held by the growth, its records bound for its new home.
    fn send_held_home(self: &Arc<Self>, st: &mut State, key: &[u8]) {
        let Some(home) = st.migrator.as_ref().map(|m| m.current(key)) else {
            return;
        };
        if let Some(queue) = st.held.get_mut(key) {
            queue.retarget(home);
        }
        self.release(st, key);
    }

    /// A fence could not be written: the growth is called off and the held keys go on as
    /// before it. Coordinated, the fence is written again after a backoff while the growth is
    /// pending (the decider calls it off at its move timeout otherwise).
    fn growth_failed(self: &Arc<Self>, st: &mut State, index: usize, attempt: u64, error: &str) {
        let Some(run) = Self::attempt(st, attempt) else {
            return;
        };
        if run.id.is_some() {
            st.counters.fence_failures += 1;
            tracing::warn!(topic = %self.topic, %error, "an epoch fence failed; retrying");
            let inner = Arc::clone(self);
            let delay = self.fence_backoff;
            self.runtime.handle.spawn(async move {
                tokio::time::sleep(delay).await;
                let mut guard = inner.lock();
                let st = &mut *guard;
                // The same attempt is the same coordinated growth.
                let Some(f) =
                    Inner::attempt(st, attempt).and_then(|r| r.growth.fences().get(index).copied())
                else {
                    return;
                };
                let after = After::EpochFence { index, attempt };
                inner.emit_fence_then(st, EPOCH_KEY, f.partition, f.header, f.route, after);
            });
            return;
        }
        let Some(run) = st.growth.take() else {
            return;
        };
        st.counters.fence_failures += 1;
        tracing::error!(
            topic = %self.topic,
            %error,
            "an epoch fence could not be written; growth called off"
        );
        let done = run.done;
        for key in &run.held {
            self.release(st, key);
        }
        if let Some(done) = done {
            let _ = done.send(Err(ProduceError::Growth {
                topic: self.topic.clone(),
                reason: format!("an epoch fence could not be written: {error}"),
            }));
        }
    }

    /// Homes the strategy and counters on `to` partitions; keys the migrator routes away from
    /// their home keep their partition in the new strategy.
    fn rehome(&self, st: &mut State, to: u32) -> Result<(), ProduceError> {
        let mut strategy =
            build_with(self.strategy_name, to, &self.strategy_config).map_err(|e| {
                ProduceError::Growth {
                    topic: self.topic.clone(),
                    reason: e.to_string(),
                }
            })?;
        let now = self.origin.elapsed().as_secs_f64();
        if let Some(m) = &st.migrator {
            for (key, partition) in m.routed() {
                strategy.adopt(key, partition, now);
            }
        }
        st.strategy = strategy;
        st.counters.per_partition.resize(to as usize, 0);
        self.partitions.store(to, Ordering::Relaxed);
        Ok(())
    }
}
