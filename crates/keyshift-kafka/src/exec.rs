//! Records handed to a long-lived subprocess over its standard input and output:
//! `keyshift worker --exec "python3 handler.py"`.
//!
//! Why: an application in any language without an HTTP server — a script, a Go or Node
//! program reading lines — gets records in per-key order with keyshift's migrations and
//! commits handled, and keeps its own connections and caches between records.
//!
//! How: [`ExecHandler`] is an [`AsyncRecordHandler`] on the consumer's slots. The command is
//! started once (through `sh -c`, so it may have arguments and pipes) and gets one line per
//! record on its standard input: the JSON object of [`record_json`] with an extra `"id"`, a
//! number unique within the process. It answers with one line per record on its standard
//! output, `{"id": N}` (or `{"id": N, "ok": true}`) when record N is done, or
//! `{"id": N, "error": "why"}` when it failed — in any order, so it may work on up to
//! `concurrency` records at once (never two of one key). Its standard error is the worker's.
//! A line that is not such an answer is logged and ignored (log to standard error instead).
//! A record without an answer within the timeout fails (a late answer is then ignored). If the
//! process exits, every record it had fails and the next record starts it again, at most once a
//! second; closing the handler closes its standard input, which asks it to exit.
//!
//! With per-key state ([`WithState`](crate::state::WithState), `worker --state`) each line also
//! carries the key's state (`"state"`, see [`put_state`]) and an answer may set it with
//! `"state"` or `"state_base64"` (see [`state_change`]).
//!
//! [`record_json`]: crate::forward::record_json
//! [`put_state`]: crate::forward::put_state
//! [`state_change`]: crate::forward::state_change

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::consumer::{AsyncRecordHandler, DeliveredRecord, HandlerError};
use crate::forward::{put_state, record_json, state_change};
use crate::lock;
use crate::state::{StateChange, StatefulHandler};

/// Least time between two starts of the command (a command that dies at once is not spun).
const RESTART_GAP: Duration = Duration::from_secs(1);

/// The answer to one record: done (with what it does to the key's state), or the
/// application's reason.
type Answer = Result<StateChange, String>;

/// Runs one command for all records; see the [module docs](self).
#[derive(Clone)]
pub struct ExecHandler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExecHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecHandler")
            .field("command", &self.inner.command)
            .finish_non_exhaustive()
    }
}

struct Inner {
    command: String,
    topic: String,
    timeout: Duration,
    next_id: AtomicU64,
    /// The running process: where its input lines go, and the records waiting for an answer.
    process: tokio::sync::Mutex<Option<Process>>,
    /// When the command was last started.
    started: Mutex<Option<Instant>>,
}

struct Process {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Arc<Mutex<Waiting>>,
}

/// Records sent to the process and not answered, and whether it still runs (one lock, so a
/// record is never left waiting on a process that has exited).
#[derive(Default)]
struct Waiting {
    exited: bool,
    records: HashMap<u64, oneshot::Sender<Answer>>,
}

impl ExecHandler {
    /// A handler that runs `command` (a shell command line) for `topic`'s records, each record
    /// bounded by `timeout`. The command starts with the first record.
    pub fn new(command: &str, topic: &str, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                command: command.to_owned(),
                topic: topic.to_owned(),
                timeout,
                next_id: AtomicU64::new(1),
                process: tokio::sync::Mutex::new(None),
                started: Mutex::new(None),
            }),
        }
    }
}

impl ExecHandler {
    /// Sends `record` (with its key's `state` when state is on) and waits for its answer
    /// (always [`StateChange::Keep`] without state).
    fn exchange(
        &self,
        record: DeliveredRecord,
        state: Option<Option<Vec<u8>>>,
    ) -> impl std::future::Future<Output = Result<StateChange, HandlerError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let mut line = record_json(&inner.topic, &record);
            line["id"] = id.into();
            let stateful = state.is_some();
            if let Some(state) = state {
                put_state(&mut line, state.as_deref());
            }
            let mut bytes = serde_json::to_vec(&line).map_err(|e| e.to_string())?;
            bytes.push(b'\n');
            let (tx, rx) = oneshot::channel();
            let waiting = {
                let mut process = inner.process.lock().await;
                if process.as_ref().is_none_or(|p| lock(&p.waiting).exited) {
                    *process = Some(inner.start().await?);
                }
                let p = process.as_ref().expect("started above");
                let mut waiting = lock(&p.waiting);
                if waiting.exited || p.lines.send(bytes).is_err() {
                    return Err(format!("{}: the process exited", inner.command).into());
                }
                waiting.records.insert(id, tx);
                drop(waiting);
                Arc::clone(&p.waiting)
            };
            match tokio::time::timeout(inner.timeout, rx).await {
                Ok(Ok(Ok(change))) if stateful => Ok(change),
                Ok(Ok(Ok(_))) => Ok(StateChange::Keep),
                Ok(Ok(Err(why))) => Err(why.into()),
                Ok(Err(_)) => Err(format!(
                    "{}: the process exited before answering record {id}",
                    inner.command
                )
                .into()),
                Err(_) => {
                    lock(&waiting).records.remove(&id);
                    Err(format!(
                        "{}: no answer to record {id} within {:?}",
                        inner.command, inner.timeout
                    )
                    .into())
                }
            }
        }
    }
}

impl AsyncRecordHandler for ExecHandler {
    fn handle(
        &self,
        record: DeliveredRecord,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send + 'static {
        let exchange = self.exchange(record, None);
        async move { exchange.await.map(|_| ()) }
    }
}

impl StatefulHandler for ExecHandler {
    fn handle(
        &self,
        record: DeliveredRecord,
        state: Option<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<StateChange, HandlerError>> + Send + 'static {
        self.exchange(record, Some(state))
    }
}

impl Inner {
    /// Starts the command with a writer task for its input and a reader task for its answers.
    async fn start(&self) -> Result<Process, String> {
        let wait = lock(&self.started)
            .map(|at| RESTART_GAP.saturating_sub(at.elapsed()))
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *lock(&self.started) = Some(Instant::now());
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &self.command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.command))?;
        tracing::info!(command = %self.command, pid = child.id(), "handler process started");
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (lines, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let command = self.command.clone();
        tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
                if let Err(err) = stdin.write_all(&line).await {
                    tracing::warn!(%command, %err, "writing a record to the handler process failed");
                    break;
                }
            }
            // Dropping stdin closes it: the process reads end of input and should exit.
        });
        let answers = Arc::clone(&waiting);
        let command = self.command.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            loop {
                match out.next_line().await {
                    Ok(Some(line)) => match parse_answer(&line) {
                        Some((id, answer)) => {
                            if let Some(tx) = lock(&answers).records.remove(&id) {
                                let _ = tx.send(answer);
                            }
                        }
                        None => {
                            tracing::warn!(%command, line = %line.chars().take(200).collect::<String>(),
                            "ignoring a line of the handler's standard output that is not an answer ({{\"id\": N}} or {{\"id\": N, \"error\": \"...\"}}); log to standard error")
                        }
                    },
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(%command, %err, "reading the handler's answers failed");
                        break;
                    }
                }
            }
            let status = child.wait().await;
            tracing::error!(%command, ?status, "handler process exited; its unanswered records fail and the next record starts it again");
            // Dropping the senders fails every record still waiting; later ones start it again.
            let mut answers = lock(&answers);
            answers.exited = true;
            answers.records.clear();
        });
        Ok(Process { lines, waiting })
    }
}

/// `{"id": N}`, `{"id": N, "ok": true}` → done; `{"id": N, "error": "why"}` or
/// `{"id": N, "ok": false}` → failed; anything else → not an answer. A done answer's `"state"`
/// or `"state_base64"` says what it does to the key's state; one that does not parse fails the
/// record with the reason.
fn parse_answer(line: &str) -> Option<(u64, Answer)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = v.get("id")?.as_u64()?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let why = err.as_str().map_or_else(|| err.to_string(), str::to_owned);
        return Some((id, Err(why)));
    }
    match v.get("ok") {
        None | Some(Value::Bool(true)) => Some((id, state_change(&v))),
        Some(Value::Bool(false)) => Some((id, Err("the handler answered ok: false".into()))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_as_documented() {
        let keep = Ok(StateChange::Keep);
        assert_eq!(parse_answer(r#"{"id": 7}"#), Some((7, keep.clone())));
        assert_eq!(parse_answer(r#"{"id": 7, "ok": true}"#), Some((7, keep)));
        assert_eq!(
            parse_answer(r#"{"id": 7, "state": "3"}"#),
            Some((7, Ok(StateChange::Set(b"3".to_vec()))))
        );
        assert_eq!(
            parse_answer(r#"{"id": 7, "state": null}"#),
            Some((7, Ok(StateChange::Delete)))
        );
        assert!(matches!(
            parse_answer(r#"{"id": 7, "state": 3}"#),
            Some((7, Err(_)))
        ));
        assert_eq!(
            parse_answer(r#"{"id": 8, "error": "db down"}"#),
            Some((8, Err("db down".into())))
        );
        assert_eq!(
            parse_answer(r#"{"id": 9, "error": {"code": 3}}"#),
            Some((9, Err(r#"{"code":3}"#.into())))
        );
        assert!(matches!(
            parse_answer(r#"{"id": 9, "ok": false}"#),
            Some((9, Err(_)))
        ));
        for not_an_answer in [
            "hello",
            "{}",
            r#"{"id": "x"}"#,
            r#"{"id": -1}"#,
            r#"{"id": 1, "ok": 3}"#,
        ] {
            assert_eq!(parse_answer(not_an_answer), None, "{not_an_answer}");
        }
    }
}
