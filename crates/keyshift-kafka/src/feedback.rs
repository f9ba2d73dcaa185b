//! Consumer feedback for a producer: the consuming group's per-partition pace and backlog,
//! read from the cluster and handed to the producer's strategy.
//!
//! The cost-aware strategy weighs a move against the backlog the moved key would park behind
//! and divides a partition's load by its consumer's measured capacity
//! ([`keyshift_core::strategy::Strategy::observe`]); the simulator feeds it, and this module
//! does the same on a real cluster. A [`FeedbackLoop`] thread asks a [`LagCollector`] every
//! `interval` for the group's committed and end offsets, turns each partition of the
//! producer's topic with a known consumption rate into a [`PartitionFeedback`] (rate = records
//! committed per second over the collector's window, lag = end − committed), hands them to
//! [`KeyshiftProducer::observe`] and keeps the latest set for readers such as `/metrics`
//! ([`FeedbackLoop::latest`]). Reading offsets never touches the records' path; a cluster
//! that cannot be read, or a group that has not committed yet, only delays feedback (logged
//! once per kind of failure) — the producer keeps routing on what it last knew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use keyshift_core::strategy::PartitionFeedback;

use crate::config::ClientSettings;
use crate::lag::{LagCollector, LagError};
use crate::producer::KeyshiftProducer;

/// How often the stop flag is looked at while the loop waits for its next collection.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Why a [`FeedbackLoop`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The lag collector could not be created (usually a bad client property).
    #[error(transparent)]
    Lag(#[from] LagError),
    /// The thread could not be started.
    #[error("cannot start the consumer feedback thread: {0}")]
    Thread(std::io::Error),
}

/// A thread feeding a producer's strategy with its consumers' pace; see the module docs.
/// Dropping it stops the thread.
#[derive(Debug)]
pub struct FeedbackLoop {
    latest: Arc<Mutex<Vec<PartitionFeedback>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FeedbackLoop {
    /// Starts reading `group`'s offsets on `producer`'s topic every `interval`.
    pub fn spawn(
        settings: &ClientSettings,
        group: &str,
        producer: KeyshiftProducer,
        interval: Duration,
    ) -> Result<Self, FeedbackError> {
        let mut collector = LagCollector::new(settings)?;
        let latest = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, stopped, group) = (Arc::clone(&latest), Arc::clone(&stop), group.to_owned());
        let thread = std::thread::Builder::new()
            .name("keyshift-feedback".into())
            .spawn(move || {
                let mut last_failure: Option<String> = None;
                while !stopped.load(Ordering::Relaxed) {
                    match collect(&mut collector, &group, producer.topic()) {
                        Ok(feedback) => {
                            if last_failure.take().is_some() {
                                tracing::info!(%group, "consumer feedback readable again");
                            }
                            if !feedback.is_empty() {
                                producer.observe(&feedback);
                            }
                            *out.lock().unwrap_or_else(|p| p.into_inner()) = feedback;
                        }
                        Err(err) => {
                            // One line per distinct failure, not one per interval.
                            let text = err.to_string();
                            if last_failure.as_deref() != Some(&text) {
                                tracing::warn!(%group, %err, "cannot read consumer feedback; routing on what is known");
                                last_failure = Some(text);
                            }
                        }
                    }
                    let mut waited = Duration::ZERO;
                    while waited < interval && !stopped.load(Ordering::Relaxed) {
                        std::thread::sleep(STOP_CHECK.min(interval - waited));
                        waited += STOP_CHECK;
                    }
                }
            })
            .map_err(FeedbackError::Thread)?;
        Ok(Self {
            latest,
            stop,
            thread: Some(thread),
        })
    }

    /// The latest feedback: one entry per partition whose consumption rate is known (empty
    /// until the collector has two samples of a partition).
    pub fn latest(&self) -> Vec<PartitionFeedback> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FeedbackLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One collection: the group's partitions of `topic` with a known consumption rate.
fn collect(
    collector: &mut LagCollector,
    group: &str,
    topic: &str,
) -> Result<Vec<PartitionFeedback>, LagError> {
    let groups = collector.collect(&[group.to_owned()], SystemTime::now())?;
    Ok(groups
        .iter()
        .flat_map(|g| g.partitions.iter())
        .filter(|p| p.topic == topic)
        .filter_map(|p| {
            Some(PartitionFeedback {
                partition: u32::try_from(p.partition).ok()?,
                throughput_rps: p.consumption_rate?,
                lag: u64::try_from(p.lag).unwrap_or(0),
            })
        })
        .collect())
}
