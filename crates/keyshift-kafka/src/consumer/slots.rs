//! Where released records run: up to `concurrency` of them at once, each in a *slot*.
//!
//! Why slots: handlers that wait on a database or a service want many records in flight,
//! while per-key order wants one record of a key at a time. The [`OrderGate`] already gives
//! both: it releases a key's next record only once the previous one is processed (and, for a
//! migrated key, once its old partition is committed past the fence), so any number of slots
//! never runs two records of one key at once, and records of other keys fill the rest.
//!
//! How: the loop thread takes released records from the gate while a slot is free, prepares
//! each (order check, CONSUME event, span) and hands it to a [`Runner`] as a [`Job`]: either
//! `concurrency` threads, each with a synchronous [`RecordHandler`] of its own, or a tokio
//! runtime that runs one future of an asynchronous handler per record. A slot completes its
//! job itself through the shared [`Finisher`]: statistics and the key's demand, then, under
//! the state lock, the gate learns the record is processed and the slot is freed, and the
//! `done` condition variable wakes whoever waits — the loop for a free slot, a revocation for
//! the records still running on the partitions it gives up (it commits only after they end,
//! so a partition's next owner never processes a key this member is still processing).
//!
//! A failed record is retried or dead-lettered as [`super::retry`] says. A handler that panics
//! frees its slot without the record counting as processed (a commit never passes it); the
//! loop then ends with the panic, as it did when handlers ran inline.
//!
//! [`OrderGate`]: keyshift_core::protocol::OrderGate
//! [`RecordHandler`]: super::RecordHandler

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyshift_core::key_demand::KeyDemand;
use keyshift_core::serial::SerialCheck;
use keyshift_trace::ProcessSpan;

use super::retry::{DeadLetters, Failing, RetryPolicy};
use super::run::{publish, State, NEXT_WORKER_ID};
use super::{ConsumerStats, DeliveredRecord, HandlerError, RecordHandler};
use crate::lock;

/// An asynchronous handler with its type erased: one boxed future per record.
pub(super) type AsyncFn = Arc<
    dyn Fn(DeliveredRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// A released record on its way to a slot.
pub(super) struct Job {
    pub record: DeliveredRecord,
    pub span: Option<ProcessSpan>,
    /// Which attempt this is (1 for a record fresh from the gate).
    pub attempt: u32,
    /// Set when every attempt failed and only the dead-letter write is left to retry: the
    /// last error. The handler is not called again.
    pub dead_letter_only: Option<String>,
}

impl Job {
    /// A record fresh from the gate.
    pub fn first(record: DeliveredRecord, span: Option<ProcessSpan>) -> Self {
        Self {
            record,
            span,
            attempt: 1,
            dead_letter_only: None,
        }
    }
}

/// What a slot reports of a job it ran.
struct Ran {
    partition: u32,
    offset: i64,
    key: Option<Vec<u8>>,
    timestamp_ms: Option<i64>,
    parked: bool,
    park_time: Duration,
    unordered: bool,
    order_exception: bool,
    span: Option<ProcessSpan>,
    attempt: u32,
    dead_letter_only: bool,
    /// The record itself, kept when a failure may retry or dead-letter it.
    record: Option<DeliveredRecord>,
}

impl Ran {
    /// What finishing `job` needs, and its record (to hand to the handler).
    fn of(job: Job) -> (Self, DeliveredRecord, Option<String>) {
        let r = &job.record;
        let ran = Ran {
            partition: r.partition,
            offset: r.offset,
            key: r.key.clone(),
            timestamp_ms: r.timestamp_ms,
            parked: r.parked,
            park_time: r.park_time,
            unordered: r.unordered,
            order_exception: r.order_exception,
            span: job.span,
            attempt: job.attempt,
            dead_letter_only: job.dead_letter_only.is_some(),
            record: None,
        };
        (ran, job.record, job.dead_letter_only)
    }
}

/// How a handler call ended.
enum Outcome {
    Done(Result<(), HandlerError>),
    Panicked(String),
}

/// Completes jobs for every slot; shared with the loop, which reads `demand` and the panic.
pub(super) struct Finisher {
    pub state: Arc<Mutex<State>>,
    /// Notified whenever a slot is freed.
    pub done: Arc<Condvar>,
    pub stats: Arc<ConsumerStats>,
    pub serial_check: Option<Arc<Mutex<SerialCheck>>>,
    pub group: String,
    /// Whether COMMIT trace events are on (they need each partition's processed maximum).
    pub commit_events: bool,
    /// How many consumers each hot key needs, from handler times and record timestamps.
    pub demand: Mutex<KeyDemand>,
    /// Origin of the clock `demand` is fed.
    pub started: Instant,
    /// The first handler panic's message; the loop ends with it.
    pub panic: Mutex<Option<String>>,
    /// What a failed record gets (see [`super::retry`]).
    pub retry: RetryPolicy,
    /// Where a record goes when every attempt failed, if anywhere.
    pub dead_letters: Option<DeadLetters>,
}

impl Finisher {
    /// Whether a failed record is kept for another attempt or a dead-letter write.
    fn keeps_records(&self) -> bool {
        !self.retry.exhausted(1) || self.dead_letters.is_some()
    }

    /// Runs a synchronous `handler` on `job`'s record, then completes it.
    fn run_sync(&self, job: Job, handler: &mut dyn RecordHandler) -> bool {
        let (mut ran, record, dead_letter_only) = Ran::of(job);
        if let Some(error) = dead_letter_only {
            ran.record = Some(record);
            return self.finish(ran, None, Instant::now(), Outcome::Done(Err(error.into())));
        }
        let worker = self.begin(ran.key.as_deref(), ran.partition, ran.offset);
        let started = Instant::now();
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&record))) {
            Ok(result) => Outcome::Done(result),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
        };
        ran.record = Some(record);
        self.finish(ran, Some(worker), started, outcome)
    }

    /// Runs an asynchronous `handler` on `job`'s record, then completes it.
    async fn run_async(self: Arc<Self>, job: Job, handler: AsyncFn) {
        let (mut ran, record, dead_letter_only) = Ran::of(job);
        if let Some(error) = dead_letter_only {
            ran.record = Some(record);
            let outcome = Outcome::Done(Err(error.into()));
            tokio::task::block_in_place(|| self.finish(ran, None, Instant::now(), outcome));
            return;
        }
        if self.keeps_records() {
            ran.record = Some(record.clone());
        }
        let worker = self.begin(ran.key.as_deref(), ran.partition, ran.offset);
        let started = Instant::now();
        // Its own task, so that a panic is reported as the join's error.
        let outcome = match tokio::spawn(handler(record)).await {
            Ok(result) => Outcome::Done(result),
            Err(err) if err.is_panic() => Outcome::Panicked(panic_message(&*err.into_panic())),
            Err(err) => Outcome::Panicked(err.to_string()),
        };
        if matches!(outcome, Outcome::Done(Err(_))) && self.dead_letters.is_some() {
            // A dead-letter write waits for its acknowledgement: off the runtime's workers.
            tokio::task::block_in_place(|| self.finish(ran, Some(worker), started, outcome));
        } else {
            self.finish(ran, Some(worker), started, outcome);
        }
    }

    /// Registers a handler call with the serial check; returns the witness id it ran as.
    fn begin(&self, key: Option<&[u8]>, partition: u32, offset: i64) -> u64 {
        // Every call is its own witness, so two slots of this consumer on one key are caught
        // as surely as two consumers.
        let worker = NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed);
        if let (Some(check), Some(key)) = (&self.serial_check, key) {
            if !lock(check).begin(key, worker) {
                ConsumerStats::add(&self.stats.concurrent_key_processing, 1);
                tracing::error!(group = %self.group, key = %String::from_utf8_lossy(key), partition, offset,
                    "key processed by two workers at the same time");
            }
        }
        worker
    }

    /// Books a finished call and frees its slot. Returns false if the handler panicked.
    fn finish(
        &self,
        mut ran: Ran,
        worker: Option<u64>,
        started: Instant,
        outcome: Outcome,
    ) -> bool {
        let done = Instant::now();
        if let (Some(check), Some(key), Some(worker)) =
            (&self.serial_check, ran.key.as_deref(), worker)
        {
            lock(check).end(key, worker);
        }
        let result = match outcome {
            Outcome::Done(result) => result,
            Outcome::Panicked(message) => {
                tracing::error!(group = %self.group, partition = ran.partition, offset = ran.offset, %message,
                    "handler panicked; the record is not processed and the consumer stops");
                lock(&self.panic).get_or_insert(message);
                let mut state = lock(&self.state);
                state.leave_slot(ran.partition);
                drop(state);
                self.done.notify_all();
                return false;
            }
        };
        // Each attempt is a span of its own (a retry's span starts none: it has no fetch).
        if let Some(span) = ran.span.take() {
            span.end(result.as_ref().err().map(|e| e as &dyn std::fmt::Display));
        }
        if let (Some(key), Some(ts), Some(_)) = (ran.key.as_deref(), ran.timestamp_ms, worker) {
            lock(&self.demand).record(
                key,
                ts,
                done.duration_since(started).as_secs_f64(),
                done.duration_since(self.started).as_secs_f64(),
            );
        }
        if let Err(err) = result {
            if !self.failed(&mut ran, err.to_string()) {
                return true;
            }
        }
        ConsumerStats::add(&self.stats.processed, 1);
        if ran.parked {
            ConsumerStats::add(&self.stats.parked_total, 1);
            self.stats.record_park(ran.park_time);
        }
        if ran.unordered {
            ConsumerStats::add(&self.stats.unordered, 1);
        }
        if ran.order_exception {
            ConsumerStats::add(&self.stats.order_exceptions, 1);
        }
        let mut state = lock(&self.state);
        if self.commit_events {
            let entry = state
                .commit_events
                .entry(ran.partition)
                .or_insert((ran.offset, ran.offset));
            entry.0 = entry.0.max(ran.offset);
        }
        if state.gate.processed(ran.partition, ran.offset) {
            if let Some(n) = state.pending.get_mut(&ran.partition) {
                *n = n.saturating_sub(1);
            }
        }
        state.failing.remove(&(ran.partition, ran.offset));
        state.leave_slot(ran.partition);
        publish(&self.stats, &state);
        drop(state);
        self.done.notify_all();
        true
    }

    /// A failed attempt (or dead-letter write). Returns true when the record is now done with
    /// (dead-lettered, or out of attempts without a dead-letter topic: processed with its
    /// error), false when it went back to the retry queue (its slot is freed here).
    fn failed(&self, ran: &mut Ran, error: String) -> bool {
        let attempts = ran.attempt;
        if !ran.dead_letter_only {
            ConsumerStats::add(&self.stats.handler_errors, 1);
        }
        let key = String::from_utf8_lossy(ran.key.as_deref().unwrap_or_default()).into_owned();
        let Some(record) = ran.record.take() else {
            tracing::warn!(group = %self.group, partition = ran.partition, offset = ran.offset, %key, %error,
                "handler failed; the record counts as processed");
            return true;
        };
        if !self.retry.exhausted(attempts) && !ran.dead_letter_only {
            let wait = self.retry.wait_after(attempts);
            tracing::warn!(group = %self.group, partition = ran.partition, offset = ran.offset, %key, attempt = attempts,
                max_attempts = ?self.retry.max_attempts, ?wait, %error,
                "handler failed; retrying after the wait (only this key waits)");
            ConsumerStats::add(&self.stats.retries, 1);
            self.requeue(ran, record, attempts + 1, None, wait, error);
            return false;
        }
        let Some(dead_letters) = &self.dead_letters else {
            tracing::warn!(group = %self.group, partition = ran.partition, offset = ran.offset, %key, attempts, %error,
                "handler failed on the last attempt; the record counts as processed");
            return true;
        };
        match dead_letters.send(&record, &error, attempts) {
            Ok(()) => {
                ConsumerStats::add(&self.stats.dead_lettered, 1);
                tracing::warn!(group = %self.group, partition = ran.partition, offset = ran.offset, %key, attempts, %error,
                    topic = dead_letters.topic(), "every attempt failed; the record went to the dead-letter topic and its key continues");
                true
            }
            Err(why) => {
                ConsumerStats::add(&self.stats.dead_letter_failures, 1);
                let wait = self.retry.wait_after(attempts);
                tracing::error!(group = %self.group, partition = ran.partition, offset = ran.offset, %key, %why, ?wait,
                    "writing a failed record to the dead-letter topic failed; retrying the write (its key waits)");
                self.requeue(ran, record, attempts, Some(error.clone()), wait, error);
                false
            }
        }
    }

    /// Puts `record` back in the retry queue, due after `wait`, and frees its slot.
    fn requeue(
        &self,
        ran: &Ran,
        record: DeliveredRecord,
        attempt: u32,
        dead_letter_only: Option<String>,
        wait: Duration,
        error: String,
    ) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let failed_attempts = if dead_letter_only.is_some() {
            attempt
        } else {
            attempt - 1
        };
        let failing = state
            .failing
            .entry((ran.partition, ran.offset))
            .or_insert_with(|| Failing {
                key: ran.key.clone().unwrap_or_default(),
                attempts: 0,
                since: now,
                last_error: String::new(),
            });
        failing.attempts = failed_attempts;
        failing.last_error = error;
        state.retries.push((
            now + wait,
            Job {
                record,
                span: None,
                attempt,
                dead_letter_only,
            },
        ));
        state.leave_slot(ran.partition);
        drop(state);
        self.done.notify_all();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// The slots: threads with a synchronous handler each, or a runtime for an asynchronous one.
pub(super) enum Runner {
    Threads {
        jobs: mpsc::Sender<Job>,
        threads: Vec<JoinHandle<()>>,
    },
    Tasks {
        jobs: tokio::sync::mpsc::UnboundedSender<Job>,
        thread: JoinHandle<()>,
    },
}

impl Runner {
    /// One thread per handler, all taking jobs from one queue.
    pub fn threads(
        handlers: Vec<Box<dyn RecordHandler>>,
        finisher: &Arc<Finisher>,
        name: &str,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(handlers.len());
        for (i, mut handler) in handlers.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            let finisher = Arc::clone(finisher);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-slot-{i}"))
                    .spawn(move || loop {
                        // The lock is held only while waiting for a job, never while handling.
                        let job = lock(&queue).recv();
                        let Ok(job) = job else { return };
                        // A panicked handler may be left broken: its slot takes no more jobs.
                        if !finisher.run_sync(job, handler.as_mut()) {
                            return;
                        }
                    })?,
            );
        }
        Ok(Runner::Threads { jobs, threads })
    }

    /// A multi-threaded tokio runtime on a thread of its own, one task per job.
    pub fn tasks(handler: AsyncFn, finisher: &Arc<Finisher>, name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(format!("{name}-async"))
            .build()?;
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let finisher = Arc::clone(finisher);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-tasks"))
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        let finisher = Arc::clone(&finisher);
                        tokio::spawn(finisher.run_async(job, Arc::clone(&handler)));
                    }
                });
                // Dropping the runtime here cancels tasks still running (a crash leaves them).
            })?;
        Ok(Runner::Tasks { jobs, thread })
    }

    /// Hands `job` to a free slot (the caller counts slots).
    pub fn submit(&self, job: Job) {
        // A send fails only once every slot ended after a panic; the loop ends on it next.
        let _ = match self {
            Runner::Threads { jobs, .. } => jobs.send(job).map_err(drop),
            Runner::Tasks { jobs, .. } => jobs.send(job).map_err(drop),
        };
    }

    /// Closes the queue; with `wait`, joins the slots (each has finished its job by then when
    /// the caller waited for the in-flight count to reach zero).
    pub fn close(self, wait: bool) {
        match self {
            Runner::Threads { jobs, threads } => {
                drop(jobs);
                if wait {
                    for t in threads {
                        let _ = t.join();
                    }
                }
            }
            Runner::Tasks { jobs, thread } => {
                drop(jobs);
                if wait {
                    let _ = thread.join();
                }
            }
        }
    }
}
