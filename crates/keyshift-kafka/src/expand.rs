//! The runtime of `keyshift expand`: grow a keyed topic from N to M partitions without
//! breaking per-key order.
//!
//! Why a runtime and not one admin call: adding partitions (CreatePartitions) does not change
//! where a keyshift producer sends anything — it homes keys on the partitions it was told —
//! and the producer is the only one that can put a fence *behind its own records*. So:
//!
//! 1. [`ensure_partitions`]: the topic gets M partitions (CreatePartitions), unless it has
//!    them already — the path for a broker without CreatePartitions (the embedded one): a
//!    topic created with M partitions whose producer homes keys on N (`keyshift gateway
//!    --active-partitions N`);
//! 2. [`ask_gateway`]: the producer (`POST /admin/grow` of the gateway) writes one epoch fence
//!    per old partition and homes keys on M; records of keys whose home changed carry the
//!    barrier of their old home (`keyshift_core::protocol::epoch`);
//! 3. [`wait_barriers`] (with a consumer group): how long until the group had processed
//!    every old partition past its epoch fence — from then on no record of that group waits
//!    for the growth, so it bounds how long any record was parked by it.

use std::time::{Duration, Instant};

use crate::admin::{Admin, AdminError};
use crate::producer::GrowthReport;

/// Why an expansion stopped; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// Reading or growing the topic failed.
    #[error("{0}")]
    Admin(#[from] AdminError),
    /// The broker cannot add partitions.
    #[error(
        "{source}\nThe broker cannot add partitions (the embedded broker, tansu 0.6, has no \
         CreatePartitions). Create the topic with {partitions} partitions up front and start \
         the producer on fewer (`keyshift gateway --active-partitions N`); `keyshift expand` \
         then grows into the partitions the topic already has."
    )]
    CannotAddPartitions {
        /// The partition count asked for.
        partitions: u32,
        /// The admin error.
        source: AdminError,
    },
    /// The gateway could not be reached or answered something unreadable.
    #[error("gateway {url}: {reason}")]
    Gateway {
        /// The URL called.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The gateway refused the growth (its message says why).
    #[error("gateway {url} refused the growth ({status}): {message}")]
    Refused {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The gateway's error message.
        message: String,
    },
    /// The group did not process the old partitions past their epoch fences in time.
    #[error(
        "group '{group}' had not processed partition(s) {behind:?} past their epoch fences \
         after {waited:?} (is every partition consumed?)"
    )]
    Timeout {
        /// The consumer group.
        group: String,
        /// Old partitions still behind their barrier.
        behind: Vec<u32>,
        /// How long it waited.
        waited: Duration,
    },
}

/// What the partition step found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    /// Partitions the topic had.
    pub had: u32,
    /// Whether CreatePartitions added some.
    pub added: bool,
}

/// Step 1: the topic has at least `partitions` partitions afterwards.
pub fn ensure_partitions(
    admin: &Admin,
    topic: &str,
    partitions: u32,
) -> Result<Partitions, ExpandError> {
    let had = admin.partitions(topic)?;
    if had >= partitions {
        return Ok(Partitions { had, added: false });
    }
    admin
        .create_partitions(topic, partitions)
        .map_err(|source| ExpandError::CannotAddPartitions { partitions, source })?;
    Ok(Partitions { had, added: true })
}

/// Step 2: asks the gateway at `base` (e.g. `http://127.0.0.1:8080`) to home keys on
/// `partitions` partitions; returns once it has.
pub fn ask_gateway(
    base: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<GrowthReport, ExpandError> {
    let url = format!("{}/admin/grow", base.trim_end_matches('/'));
    let failed = |reason: String| ExpandError::Gateway {
        url: url.clone(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let response = client
            .post(&url)
            .json(&serde_json::json!({ "partitions": partitions }))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    failed(format!(
                        "no answer within {timeout:?}. With coordinated gateways the growth \
                         waits for every replica (a silent one until it is heard again or \
                         forgotten); the request stays in the control log and the growth \
                         still happens: run expand again to wait for it"
                    ))
                } else {
                    failed(e.to_string())
                }
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            return Err(ExpandError::Refused {
                url: url.clone(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_str(&body).map_err(|e| failed(format!("unexpected answer {body}: {e}")))
    })
}

/// Step 3: polls `group`'s committed offsets of the old partitions until each is past its
/// barrier (`committed > barrier`); returns, per old partition, how long after the call it
/// passed. `progress` hears the partitions still behind at each poll.
pub fn wait_barriers(
    admin: &Admin,
    group: &str,
    topic: &str,
    barriers: &[i64],
    timeout: Duration,
    mut progress: impl FnMut(&[u32]),
) -> Result<Vec<Duration>, ExpandError> {
    let started = Instant::now();
    let mut passed: Vec<Option<Duration>> = vec![None; barriers.len()];
    loop {
        let committed = admin.committed_offsets(group, topic, barriers.len() as u32)?;
        for (p, (&barrier, c)) in barriers.iter().zip(committed).enumerate() {
            if passed[p].is_none() && c.is_some_and(|c| c > barrier) {
                passed[p] = Some(started.elapsed());
            }
        }
        let behind: Vec<u32> = (0..barriers.len() as u32)
            .filter(|&p| passed[p as usize].is_none())
            .collect();
        if behind.is_empty() {
            return Ok(passed.into_iter().flatten().collect());
        }
        if started.elapsed() >= timeout {
            return Err(ExpandError::Timeout {
                group: group.to_owned(),
                behind,
                waited: started.elapsed(),
            });
        }
        progress(&behind);
        std::thread::sleep(Duration::from_millis(200));
    }
}
