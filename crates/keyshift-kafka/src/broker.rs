//! An in-process Kafka-compatible broker (tansu) for demos, tests and local development.
//!
//! [`EmbeddedBroker::start`] runs tansu on its own thread with its own tokio runtime, storing
//! data with tansu's `sqlite://` engine in a temporary directory, listening on a free loopback
//! port. It returns once the port accepts connections and a metadata request succeeds, so
//! clients created afterwards work at once. [`EmbeddedBroker::shutdown`] (or dropping it)
//! stops the runtime — which closes the listener and every connection — and removes the
//! temporary directory.
//!
//! Why these choices:
//! - A dedicated runtime thread makes the broker independent of the caller: it works from
//!   sync code, from `#[tokio::test]`'s single-threaded runtime, and stopping it cannot
//!   leave tasks behind in the caller's runtime. tansu's own `Broker::main` is not used
//!   because it installs SIGINT/SIGTERM handlers, which belong to the embedding process.
//! - `sqlite://`, never `memory://`: tansu 0.6.0's memory engine answers ListOffsets(latest)
//!   with the last batch's base offset + 1, which breaks lag and end-offset checks.
//!
//! [`run_standalone`] is the `keyshift broker` command: the same broker on a chosen address,
//! optionally with a topic, printing its bootstrap address and running until interrupted.
//!
//! tansu is not Apache Kafka; nothing else in keyshift may depend on tansu-only behaviour.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::{Storage, StorageContainer};
use tempfile::TempDir;
use url::Url;

use crate::admin::{Admin, AdminConfig, AdminError, TopicStatus};
use crate::config::{ClientSettings, Property};
use crate::sasl_users::SaslUser;

/// The address `keyshift broker` listens on by default (Kafka's usual port).
pub const DEFAULT_STANDALONE_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9092);

/// Name of the sqlite database file inside the data directory.
pub const DATABASE_FILE: &str = "tansu.db";

const CLUSTER_ID: &str = "keyshift-embedded";
const NODE_ID: i32 = 1;
/// How many fresh ports to try when another process takes the chosen free port first.
const PORT_ATTEMPTS: usize = 3;
/// Bound for stopping the broker runtime; tasks still running after it are abandoned.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
const METADATA_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound for tansu to register its cluster so that SASL users can be added to it.
const SEED_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`EmbeddedBroker::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Address to listen on (and advertise); `None` picks a free port on 127.0.0.1.
    pub listen: Option<SocketAddr>,
    /// Directory for the sqlite database, kept after shutdown; `None` uses a temporary
    /// directory that is removed on shutdown.
    pub data_dir: Option<PathBuf>,
    /// How long to wait for the broker to accept connections and answer metadata.
    pub startup_timeout: Duration,
    /// SASL users: when there are any, every client must authenticate (SASL_PLAINTEXT) with
    /// SCRAM-SHA-256 or SCRAM-SHA-512 as one of them (tansu 0.6 also accepts PLAIN, with any
    /// password); see [`crate::sasl_users`]. The broker's own admin client is the first user.
    pub sasl_users: Vec<SaslUser>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            listen: None,
            data_dir: None,
            startup_timeout: Duration::from_secs(30),
            sasl_users: Vec::new(),
        }
    }
}

/// A failure to start or use the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The data directory could not be created or cannot be expressed as a tansu storage URL.
    #[error("embedded broker data directory '{}': {reason}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// No free loopback port could be found, or the broker thread could not be spawned.
    #[error("cannot start the embedded broker: {0}")]
    Io(#[from] io::Error),
    /// tansu failed while building or serving (e.g. the address is in use).
    #[error("embedded broker on {addr} failed: {message}")]
    Failed {
        /// The listen address.
        addr: SocketAddr,
        /// tansu's error.
        message: String,
    },
    /// The broker did not accept connections or answer metadata in time.
    #[error("embedded broker on {addr} not ready within {timeout:?}: {detail}")]
    NotReady {
        /// The listen address.
        addr: SocketAddr,
        /// The startup timeout.
        timeout: Duration,
        /// The last thing that failed.
        detail: String,
    },
    /// A topic operation on the broker failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// A running in-process broker; see the [module docs](self).
pub struct EmbeddedBroker {
    addr: SocketAddr,
    bootstrap: String,
    /// What a client of this broker needs (SASL as the first user when users are set).
    settings: ClientSettings,
    data_dir: PathBuf,
    admin: Option<Admin>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Declared last and dropped after the thread is joined, so the database is closed first.
    _temp_dir: Option<TempDir>,
}

/// What the broker thread reports before the caller's readiness probe succeeds.
enum ThreadEvent {
    /// tansu stopped (build or serve failed, or the serve task ended).
    Stopped(String, Option<io::ErrorKind>),
}

impl EmbeddedBroker {
    /// Starts a broker on a free loopback port with a temporary data directory.
    ///
    /// Blocks until the broker is ready (bounded by [`BrokerOptions::startup_timeout`]); it
    /// does not need to be called from an async runtime, but may be.
    pub fn start() -> Result<Self, BrokerError> {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker with explicit options; see [`EmbeddedBroker::start`].
    pub fn start_with(options: BrokerOptions) -> Result<Self, BrokerError> {
        let (temp_dir, data_dir) = match &options.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|err| BrokerError::DataDir {
                    path: dir.clone(),
                    reason: err.to_string(),
                })?;
                let dir = dir.canonicalize().map_err(|err| BrokerError::DataDir {
                    path: dir.clone(),
                    reason: err.to_string(),
                })?;
                (None, dir)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("keyshift-broker-")
                    .tempdir()?;
                let dir = temp.path().canonicalize()?;
                (Some(temp), dir)
            }
        };
        let storage = storage_url(&data_dir.join(DATABASE_FILE))?;
        // The broker's incarnation, shared with the SASL seeding below so that the cluster it
        // registers is the one tansu registers again when it starts.
        let incarnation = uuid::Uuid::new_v4();
        if !options.sasl_users.is_empty() {
            // Before tansu opens the database: two writers of one sqlite file meet its lock.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(seed_users(&storage, incarnation, &options.sasl_users))
                .map_err(|message| BrokerError::Failed {
                    addr: options
                        .listen
                        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
                    message,
                })?;
        }

        let attempts = if options.listen.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let addr = match options.listen {
                Some(addr) => addr,
                None => free_loopback_port()?,
            };
            let settings = client_settings(addr, options.sasl_users.first());
            match launch(
                addr,
                storage.clone(),
                &settings,
                incarnation,
                !options.sasl_users.is_empty(),
                options.startup_timeout,
            ) {
                Ok((stop, thread, admin)) => {
                    let users = options.sasl_users.len();
                    tracing::info!(%addr, data_dir = %data_dir.display(), sasl_users = users, "embedded broker ready");
                    return Ok(EmbeddedBroker {
                        addr,
                        bootstrap: addr.to_string(),
                        settings,
                        data_dir,
                        admin: Some(admin),
                        stop: Some(stop),
                        thread: Some(thread),
                        _temp_dir: temp_dir,
                    });
                }
                // Someone took the free port between our probe and tansu's bind: try another.
                Err((err, Some(io::ErrorKind::AddrInUse))) if options.listen.is_none() => {
                    last_error = Some(err);
                }
                Err((err, _)) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The bootstrap servers string for clients, e.g. `127.0.0.1:40123`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The address the broker listens on and advertises.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding the sqlite database.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Client settings pointing at this broker, to add a client id or properties to (with
    /// SASL users: authenticated as the first one, SCRAM-SHA-512).
    pub fn client_settings(&self) -> ClientSettings {
        self.settings.clone()
    }

    /// An admin client for this broker (replication factor 1, the only one it can honour).
    pub fn admin(&self) -> &Admin {
        self.admin.as_ref().expect("the admin lives until shutdown")
    }

    /// Creates a topic idempotently; see [`Admin::create_topic`].
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<TopicStatus, BrokerError> {
        Ok(self.admin().create_topic(topic, partitions)?)
    }

    /// Stops the broker and waits for it: the listener and all connections are closed and the
    /// port is free when this returns; a temporary data directory is removed.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Our own client goes first so it does not log reconnect attempts to a dead broker.
        self.admin.take();
        if let Some(stop) = self.stop.take() {
            // An error means the broker already stopped on its own; joining still applies.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(addr = %self.addr, "embedded broker thread panicked");
            }
            tracing::info!(addr = %self.addr, "embedded broker stopped");
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

type Launched = (tokio::sync::oneshot::Sender<()>, JoinHandle<()>, Admin);

/// What a client of the broker at `addr` needs: SASL as `user` (SCRAM-SHA-512) if there is one.
fn client_settings(addr: SocketAddr, user: Option<&SaslUser>) -> ClientSettings {
    let settings = ClientSettings::new(addr.to_string());
    let Some(user) = user else {
        return settings;
    };
    let property = |k: &str, v: &str| Property::new(k, v).expect("librdkafka knows SASL");
    settings.properties([
        property("security.protocol", "SASL_PLAINTEXT"),
        property("sasl.mechanism", "SCRAM-SHA-512"),
        property("sasl.username", &user.name),
        property("sasl.password", &user.password),
    ])
}

/// Writes the users' SCRAM credentials into the storage at `storage` before tansu starts,
/// registering its cluster there first (credentials belong to a cluster: without its row they
/// would be dropped), checking that the first user's credential reads back.
async fn seed_users(
    storage: &Url,
    incarnation: uuid::Uuid,
    users: &[SaslUser],
) -> Result<(), String> {
    let first = &users[0].name;
    let deadline = tokio::time::Instant::now() + SEED_TIMEOUT;
    loop {
        let attempt = async {
            let container = StorageContainer::builder()
                .node_id(NODE_ID)
                .cluster_id(CLUSTER_ID)
                .advertised_listener(Url::parse("tcp://127.0.0.1:0").expect("a valid URL"))
                .storage(storage.clone())
                .build()
                .await
                .map_err(|e| format!("cannot open its storage to add SASL users: {e}"))?;
            // Register the cluster as tansu does when it starts serving (the same request, which
            // it repeats): credentials need the cluster's row.
            container
                .register_broker(tansu_storage::BrokerRegistrationRequest {
                    broker_id: NODE_ID,
                    cluster_id: CLUSTER_ID.to_owned(),
                    incarnation_id: incarnation,
                    rack: None,
                })
                .await
                .map_err(|e| format!("cannot register the cluster to add SASL users: {e}"))?;
            crate::sasl_users::seed(&container, users).await?;
            container
                .user_scram_credential(first, tansu_sans_io::ScramMechanism::Scram512)
                .await
                .map_err(|e| format!("cannot read back the SCRAM credentials of {first}: {e}"))
        };
        let why = match attempt.await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => format!("the SCRAM credentials of {first} did not persist"),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{why} (tried for {SEED_TIMEOUT:?})"));
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

/// Starts tansu on `addr` in a new thread and waits until it is ready.
fn launch(
    addr: SocketAddr,
    storage: Url,
    settings: &ClientSettings,
    incarnation: uuid::Uuid,
    authentication: bool,
    timeout: Duration,
) -> Result<Launched, (BrokerError, Option<io::ErrorKind>)> {
    let listener = Url::parse(&format!("tcp://{addr}")).expect("a socket address is a valid URL");
    let advertised = advertised_url(addr);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (event_tx, event_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("keyshift-broker-{}", addr.port()))
        .spawn(move || {
            run_broker_thread(
                listener,
                advertised,
                storage,
                incarnation,
                authentication,
                stop_rx,
                event_tx,
            )
        })
        .map_err(|err| (BrokerError::Io(err), None))?;

    let stop_thread = |stop: tokio::sync::oneshot::Sender<()>, thread: JoinHandle<()>| {
        let _ = stop.send(());
        let _ = thread.join();
    };
    match wait_ready(addr, settings, timeout, &event_rx) {
        Ok(admin) => Ok((stop_tx, thread, admin)),
        Err(err) => {
            stop_thread(stop_tx, thread);
            Err(err)
        }
    }
}

fn run_broker_thread(
    listener: Url,
    advertised: Url,
    storage: Url,
    incarnation: uuid::Uuid,
    authentication: bool,
    stop: tokio::sync::oneshot::Receiver<()>,
    events: mpsc::Sender<ThreadEvent>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keyshift-broker-rt")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = events.send(ThreadEvent::Stopped(
                format!("cannot build its runtime: {err}"),
                None,
            ));
            return;
        }
    };
    runtime.block_on(async move {
        let built = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(NODE_ID)
            .cluster_id(CLUSTER_ID)
            .incarnation_id(incarnation)
            .advertised_listener(advertised)
            .storage(storage)
            .listener(listener)
            .authentication(authentication)
            .silent(true)
            .build()
            .await;
        let mut broker = match built {
            Ok(broker) => broker,
            Err(err) => {
                let _ = events.send(ThreadEvent::Stopped(
                    format!("tansu could not be built: {err}"),
                    io_kind(&err),
                ));
                return;
            }
        };
        // `serve` is spawned rather than awaited in place so that a panic inside tansu is
        // reported as an error instead of tearing down this thread silently.
        let serve = tokio::spawn(async move { broker.serve(tokio::time::Instant::now()).await });
        tokio::select! {
            result = serve => {
                let (message, kind) = match result {
                    Ok(Ok(())) => ("tansu stopped serving".to_owned(), None),
                    Ok(Err(err)) => (format!("tansu stopped: {err}"), io_kind(&err)),
                    Err(join) => (format!("tansu panicked: {join}"), None),
                };
                tracing::error!(%message, "embedded broker stopped on its own");
                let _ = events.send(ThreadEvent::Stopped(message, kind));
            }
            _ = stop => {}
        }
    });
    // Dropping every task closes the listener and all client connections.
    runtime.shutdown_timeout(STOP_TIMEOUT);
}

fn io_kind(err: &tansu_broker::Error) -> Option<io::ErrorKind> {
    match err {
        tansu_broker::Error::Io(io) => Some(io.kind()),
        _ => None,
    }
}

/// Waits for the port to accept connections, then for a metadata round trip.
fn wait_ready(
    addr: SocketAddr,
    settings: &ClientSettings,
    timeout: Duration,
    events: &mpsc::Receiver<ThreadEvent>,
) -> Result<Admin, (BrokerError, Option<io::ErrorKind>)> {
    let deadline = Instant::now() + timeout;
    let stopped = |events: &mpsc::Receiver<ThreadEvent>| match events.try_recv() {
        Ok(ThreadEvent::Stopped(message, kind)) => {
            Some((BrokerError::Failed { addr, message }, kind))
        }
        Err(_) => None,
    };
    let not_ready = |detail: String| {
        (
            BrokerError::NotReady {
                addr,
                timeout,
                detail,
            },
            None,
        )
    };

    loop {
        if let Some(failure) = stopped(events) {
            return Err(failure);
        }
        match TcpStream::connect_timeout(&addr, READY_POLL_INTERVAL * 10) {
            Ok(_) => break,
            Err(err) if Instant::now() >= deadline => {
                return Err(not_ready(format!("connecting failed: {err}")));
            }
            Err(_) => std::thread::sleep(READY_POLL_INTERVAL),
        }
    }

    let admin = Admin::with_config(
        &settings.clone().client_id("keyshift-embedded-admin"),
        AdminConfig {
            replication_factor: Some(1),
            ..AdminConfig::default()
        },
    )
    .map_err(|err| not_ready(err.to_string()))?;
    // In short slices, so that a broker that failed after something else answered on its
    // port (e.g. the port was taken) is reported at once rather than after the timeout.
    loop {
        if let Some(failure) = stopped(events) {
            return Err(failure);
        }
        let detail = match admin.cluster_broker_count(METADATA_PROBE_TIMEOUT) {
            Ok(count) if count > 0 => return Ok(admin),
            Ok(_) => "metadata lists no brokers".to_owned(),
            Err(err) => format!("metadata request failed: {err}"),
        };
        if Instant::now() >= deadline {
            return Err(not_ready(detail));
        }
    }
}

/// What clients are told to connect to: the listen address, or loopback if it is a wildcard.
fn advertised_url(addr: SocketAddr) -> Url {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    Url::parse(&format!("tcp://{host}")).expect("a socket address is a valid URL")
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_loopback_port() -> io::Result<SocketAddr> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    probe.local_addr()
}

/// The `sqlite://` URL under which tansu 0.6.0 opens exactly `file`.
///
/// tansu resolves the URL as `current_dir / host / path-without-its-leading-slash`, so a
/// plain `sqlite:///tmp/x.db` would land under the working directory. Giving the path a
/// second leading slash (`sqlite:////tmp/x.db`) leaves an absolute path after that strip,
/// which replaces the working directory when joined.
fn storage_url(file: &Path) -> Result<Url, BrokerError> {
    let bad = |reason: &str| BrokerError::DataDir {
        path: file.to_path_buf(),
        reason: reason.to_owned(),
    };
    let text = file
        .to_str()
        .ok_or_else(|| bad("the path is not valid UTF-8"))?;
    if !file.is_absolute() {
        return Err(bad("the path must be absolute"));
    }
    let url = Url::parse(&format!("sqlite:///{text}"))
        .map_err(|err| bad(&format!("not expressible as a URL: {err}")))?;
    // tansu uses the percent-encoded path as is, so paths that need encoding cannot work.
    if resolve_like_tansu(&url) != file {
        return Err(bad(
            "the path contains characters that need URL encoding (e.g. spaces); choose another",
        ));
    }
    Ok(url)
}

/// tansu 0.6.0's `lite::Builder::build` path resolution, relative to `/` instead of the
/// working directory: the result must be the same either way for our URLs.
fn resolve_like_tansu(url: &Url) -> PathBuf {
    let mut path = PathBuf::from("/nonexistent-working-dir");
    if let Some(domain) = url.domain() {
        path.push(domain);
    }
    match url.path().strip_prefix('/') {
        Some(relative) => path.push(relative),
        None => path.push(url.path()),
    }
    path
}

/// Options of `keyshift broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneOptions {
    /// Address to listen on and advertise.
    pub listen: SocketAddr,
    /// A topic to create at startup, with its partition count.
    pub topic: Option<(String, u32)>,
    /// Keep data in this directory instead of a temporary one.
    pub data_dir: Option<PathBuf>,
    /// Require SASL as one of these users (see [`BrokerOptions::sasl_users`]).
    pub sasl_users: Vec<SaslUser>,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        StandaloneOptions {
            listen: DEFAULT_STANDALONE_LISTEN,
            topic: None,
            data_dir: None,
            sasl_users: Vec::new(),
        }
    }
}

/// Runs `keyshift broker`: starts the broker, creates the topic if asked, prints the bootstrap
/// address as the first line of stdout (details go to stderr) and runs until SIGINT or
/// SIGTERM, then shuts down cleanly.
pub async fn run_standalone(options: StandaloneOptions) -> Result<(), BrokerError> {
    serve_standalone(options, interrupted(), |broker| {
        println!("{}", broker.bootstrap_servers());
        eprintln!(
            "keyshift broker (tansu, sqlite storage in {}) listening on {}; Ctrl-C stops it",
            broker.data_dir().display(),
            broker.bootstrap_servers()
        );
    })
    .await
}

/// [`run_standalone`] with the stop condition and the ready report supplied by the caller,
/// for embedding it elsewhere and for tests.
pub async fn serve_standalone<F, R>(
    options: StandaloneOptions,
    until: F,
    on_ready: R,
) -> Result<(), BrokerError>
where
    F: Future<Output = ()>,
    R: FnOnce(&EmbeddedBroker),
{
    let broker = tokio::task::spawn_blocking(move || {
        let broker = EmbeddedBroker::start_with(BrokerOptions {
            listen: Some(options.listen),
            data_dir: options.data_dir,
            sasl_users: options.sasl_users,
            ..BrokerOptions::default()
        })?;
        if let Some((topic, partitions)) = &options.topic {
            let status = broker.create_topic(topic, *partitions)?;
            tracing::info!(topic, partitions, ?status, "topic ready");
        }
        Ok::<_, BrokerError>(broker)
    })
    .await
    .map_err(|join| BrokerError::Io(io::Error::other(join.to_string())))??;
    on_ready(&broker);
    until.await;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .map_err(|join| BrokerError::Io(io::Error::other(join.to_string())))
}

/// Resolves on the first SIGINT or SIGTERM.
async fn interrupted() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_url_resolves_to_the_absolute_file() {
        let file = Path::new("/tmp/keyshift-broker-x/tansu.db");
        let url = storage_url(file).unwrap();
        assert_eq!(url.scheme(), "sqlite");
        assert_eq!(resolve_like_tansu(&url), file);
    }

    #[test]
    fn storage_url_rejects_relative_and_encoded_paths() {
        assert!(matches!(
            storage_url(Path::new("rel/tansu.db")),
            Err(BrokerError::DataDir { .. })
        ));
        let err = storage_url(Path::new("/tmp/with space/tansu.db")).unwrap_err();
        assert!(err.to_string().contains("with space"), "{err}");
    }

    #[test]
    fn wildcard_listen_is_advertised_as_loopback() {
        let url = advertised_url("0.0.0.0:9092".parse().unwrap());
        assert_eq!(url.as_str(), "tcp://127.0.0.1:9092");
        let url = advertised_url("127.0.0.1:9093".parse().unwrap());
        assert_eq!(url.as_str(), "tcp://127.0.0.1:9093");
    }
}
