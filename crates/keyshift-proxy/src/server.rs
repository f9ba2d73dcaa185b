//! The proxy's sockets: one listener per upstream broker, and per client connection a task that
//! relays frames both ways while decoding them and reporting to the [`Observer`].
//!
//! Each direction reads one frame, handles it, and writes it before reading the next, so a slow
//! reader on one side stops the proxy reading from the other (TCP backpressure), and a
//! connection's memory stays within about two frames. Responses are matched to requests by
//! correlation id in request order (Kafka answers in order; requests that get no answer, such as
//! Produce with `acks = 0`, are dropped when a later response arrives).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{split_host_port, ProxyConfig};
use crate::error::ProxyError;
use crate::observe::{
    CloseReason, ConnInfo, DecodeFailure, Direction, FetchedBatch, Observer, OffsetCommitEvent,
    OpaqueRelay, ProduceAck, ProducedBatch, RequestEvent, ResponseEvent, SaslEvent, SaslStep,
    TlsSide, Watermark, WatermarkSource,
};
use crate::stream::{ReadHalf, Stream, WriteHalf};
use crate::tls;
use crate::wire::codec::{self, api_name, OpaqueRequest, Request};
use crate::wire::frame::{self, FrameReader, MIN_REQUEST_BYTES, MIN_RESPONSE_BYTES};
use crate::wire::records::{self, Detail, Limits};
use crate::wire::rewrite;
use crate::wire::FrameError;

/// The proxy. Start it with [`Proxy::start`].
#[derive(Debug)]
pub struct Proxy;

/// A broker listener of a running proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The broker (`host:port` as configured or advertised).
    pub upstream: String,
    /// The local address clients connect to.
    pub listen: SocketAddr,
}

impl Proxy {
    /// Validates `config`, binds the bootstrap listener and every explicitly mapped broker, and
    /// starts accepting. Must be called inside a Tokio runtime. Brokers discovered later (from
    /// Metadata, FindCoordinator, DescribeCluster responses) get listeners as they appear.
    pub async fn start(
        config: ProxyConfig,
        observer: Arc<dyn Observer>,
    ) -> Result<RunningProxy, ProxyError> {
        config.validate()?;
        let acceptor = config.client_tls.as_ref().map(tls::acceptor).transpose()?;
        let connector = config
            .upstream_tls
            .as_ref()
            .map(tls::connector)
            .transpose()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let advertised_host = config
            .advertised_host
            .clone()
            .unwrap_or_else(|| config.listen.ip().to_string());
        let next_port = match config.listen.port() {
            0 => None,
            p => Some(p.saturating_add(1)),
        };
        let shared = Arc::new(Shared {
            limits: Limits {
                max_decompressed_bytes: config.max_decompressed_bytes,
            },
            config,
            observer,
            acceptor,
            connector,
            advertised_host,
            listeners: Mutex::new(Listeners {
                by_upstream: HashMap::new(),
                order: Vec::new(),
                next_port,
                tasks: Vec::new(),
            }),
            discovering: Mutex::new(()),
            topics: RwLock::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            shutdown: shutdown_rx,
        });
        let bootstrap = shared.config.upstream.clone();
        let listen = shared.config.listen;
        shared.bind(&bootstrap, listen)?;
        for b in shared.config.brokers.clone() {
            shared.bind(&b.upstream, b.listen)?;
        }
        Ok(RunningProxy {
            shared,
            shutdown: shutdown_tx,
        })
    }
}

/// A started proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct RunningProxy {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl RunningProxy {
    /// The bootstrap listener: what clients use as `bootstrap.servers`.
    pub fn bootstrap_addr(&self) -> SocketAddr {
        self.listeners()[0].listen
    }

    /// Every listener, the bootstrap one first, then in the order they were bound.
    pub fn listeners(&self) -> Vec<Listener> {
        lock(&self.shared.listeners).order.clone()
    }

    /// Stops accepting, closes every connection (reported with [`CloseReason::Shutdown`]) and
    /// waits for the listeners to stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut lock(&self.shared.listeners).tasks);
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Listeners {
    by_upstream: HashMap<String, SocketAddr>,
    order: Vec<Listener>,
    /// Port for the next discovered broker; `None` when the proxy listens on free ports.
    next_port: Option<u16>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    config: ProxyConfig,
    limits: Limits,
    observer: Arc<dyn Observer>,
    /// TLS towards clients, when configured.
    acceptor: Option<TlsAcceptor>,
    /// TLS towards brokers, when configured, with the name every broker is checked against
    /// (`None`: each broker's own host).
    connector: Option<(TlsConnector, Option<ServerName<'static>>)>,
    advertised_host: String,
    listeners: Mutex<Listeners>,
    /// Held while a newly named broker gets its listener.
    discovering: Mutex<()>,
    /// Topic ids seen in Metadata responses, for Produce v13 / Fetch v13+ which name topics by id.
    topics: RwLock<HashMap<Uuid, Arc<str>>>,
    next_conn: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

/// A poisoned lock only means another connection task panicked mid-update of plain data; the
/// data is still usable, so keep serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Binds a listener for `upstream` at `addr` and starts accepting on it.
    fn bind(self: &Arc<Self>, upstream: &str, addr: SocketAddr) -> Result<SocketAddr, ProxyError> {
        let bind_err = |source| ProxyError::Bind {
            addr,
            upstream: upstream.to_string(),
            source,
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let task = tokio::spawn(accept_loop(self.clone(), listener, upstream.to_string()));
        let mut l = lock(&self.listeners);
        l.by_upstream.insert(upstream.to_string(), local);
        l.order.push(Listener {
            upstream: upstream.to_string(),
            listen: local,
        });
        l.tasks.push(task);
        tracing::info!(listen = %local, upstream, "proxy listening");
        Ok(local)
    }

    /// The listener for a broker advertised as `host:port`, bound on first sight.
    fn listener_for(self: &Arc<Self>, host: &str, port: i32) -> Option<SocketAddr> {
        /// Ports tried past a taken one before giving up on "the following ports".
        const PORT_TRIES: u16 = 100;
        let port = u16::try_from(port).ok()?;
        let upstream = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        if let Some(a) = lock(&self.listeners).by_upstream.get(&upstream) {
            return Some(*a);
        }
        // One discovery at a time, so two connections naming a new broker bind it once.
        let _discovering = lock(&self.discovering);
        if let Some(a) = lock(&self.listeners).by_upstream.get(&upstream) {
            return Some(*a);
        }
        let ip = self.config.listen.ip();
        let mapped = self.config.brokers.iter().find(|m| m.upstream == upstream);
        let mut last_err = None;
        for _ in 0..PORT_TRIES {
            let addr = match (mapped, lock(&self.listeners).next_port.as_mut()) {
                (Some(m), _) => m.listen,
                (None, None) => SocketAddr::new(ip, 0),
                (None, Some(p)) => {
                    let addr = SocketAddr::new(ip, *p);
                    *p = p.checked_add(1)?;
                    addr
                }
            };
            match self.bind(&upstream, addr) {
                Ok(a) => return Some(a),
                // A taken port among "the following ports": try the next one.
                Err(e) if mapped.is_none() && addr.port() != 0 => last_err = Some(e),
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = last_err {
            tracing::warn!(error = %e, "cannot add a listener; clients will be told the broker's own address");
        }
        None
    }

    fn topic_name(&self, name: &str, id: Uuid) -> Arc<str> {
        if !name.is_empty() || id.is_nil() {
            return Arc::from(name);
        }
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::from(id.to_string()))
    }
}

/// Resolves once shutdown is signalled (or the proxy handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not across the caller's await.
    let _ = rx.wait_for(|s| *s).await.is_ok();
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, upstream: String) {
    let mut shutdown = shared.shutdown.clone();
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = ConnInfo {
                        id: shared.next_conn.fetch_add(1, Ordering::Relaxed),
                        client,
                        listener: local,
                        upstream: upstream.clone(),
                    };
                    tokio::spawn(run_connection(shared.clone(), stream, conn));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, listen = %local, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn run_connection(shared: Arc<Shared>, client: TcpStream, conn: ConnInfo) {
    shared.observer.connection_opened(&conn);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = serve(&shared, client, &conn) => {}
        _ = stopped(&mut shutdown) => report_close(&shared, &conn, &CloseReason::Shutdown),
    }
}

/// Logs and reports a close. Called while the client socket is still open, so that a client
/// seeing its connection end can rely on the observer already knowing why.
fn report_close(shared: &Shared, conn: &ConnInfo, reason: &CloseReason) {
    match reason {
        CloseReason::Frame(_)
        | CloseReason::UpstreamConnect(_)
        | CloseReason::Io(_)
        | CloseReason::ClientTls(_)
        | CloseReason::UpstreamTls(_) => {
            tracing::warn!(conn = conn.id, client = %conn.client, upstream = %conn.upstream,
                reason = %reason, "closing connection");
        }
        _ => tracing::debug!(conn = conn.id, reason = %reason, "connection closed"),
    }
    shared.observer.connection_closed(conn, reason);
}

async fn serve(shared: &Arc<Shared>, client: TcpStream, conn: &ConnInfo) {
    let client = match &shared.acceptor {
        None => Stream::Plain(client),
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.config.detect_timeout, acceptor.accept(client));
            match handshake.await {
                Ok(Ok(s)) => {
                    shared.observer.tls_handshake(conn, TlsSide::Client, Ok(()));
                    Stream::Tls(Box::new(s.into()))
                }
                Ok(Err(e)) => return tls_failed(shared, conn, TlsSide::Client, e.to_string()),
                Err(_) => {
                    let e = format!("no handshake within {:?}", shared.config.detect_timeout);
                    return tls_failed(shared, conn, TlsSide::Client, e);
                }
            }
        }
    };
    // The client's halves live until the close is reported (see `report_close`).
    let (mut cr, mut cw) = client.into_split();
    let reason = serve_with(shared, &mut cr, &mut cw, conn).await;
    report_close(shared, conn, &reason);
}

fn tls_failed(shared: &Shared, conn: &ConnInfo, side: TlsSide, error: String) {
    shared.observer.tls_handshake(conn, side, Err(&error));
    let reason = match side {
        TlsSide::Client => CloseReason::ClientTls(error),
        TlsSide::Upstream => CloseReason::UpstreamTls(error),
    };
    report_close(shared, conn, &reason);
}

/// Connects to `conn`'s broker, over TLS when configured, within the connect timeout.
async fn connect_upstream(shared: &Shared, conn: &ConnInfo) -> Result<Stream, CloseReason> {
    let timeout = shared.config.connect_timeout;
    let connect = async {
        let tcp = TcpStream::connect(&conn.upstream)
            .await
            .map_err(|e| CloseReason::UpstreamConnect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, fixed)) = &shared.connector else {
            return Ok(Stream::Plain(tcp));
        };
        let name = match fixed {
            Some(n) => n.clone(),
            None => {
                let host = split_host_port(&conn.upstream).map_or("", |(h, _)| h);
                tls::server_name(host).map_err(CloseReason::UpstreamTls)?
            }
        };
        match connector.connect(name, tcp).await {
            Ok(s) => {
                shared
                    .observer
                    .tls_handshake(conn, TlsSide::Upstream, Ok(()));
                Ok(Stream::Tls(Box::new(s.into())))
            }
            Err(e) => {
                let e = e.to_string();
                shared
                    .observer
                    .tls_handshake(conn, TlsSide::Upstream, Err(&e));
                Err(CloseReason::UpstreamTls(e))
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(CloseReason::UpstreamConnect(format!(
            "timed out after {timeout:?}"
        ))),
    }
}

async fn serve_with(
    shared: &Arc<Shared>,
    client_r: &mut ReadHalf,
    client_w: &mut WriteHalf,
    conn: &ConnInfo,
) -> CloseReason {
    let cfg = &shared.config;
    let mut reader = FrameReader::new(cfg.max_frame_bytes, MIN_REQUEST_BYTES);
    // Detection: wait for the first 8 bytes (Kafka clients speak first).
    let detect = async {
        while reader.buffered() < 8 {
            reader.buffer().reserve(64 * 1024);
            match client_r.read_buf(reader.buffer()).await {
                Ok(0) => return Err(CloseReason::ClientClosed),
                Ok(_) => {}
                Err(e) => return Err(CloseReason::Io(e.to_string())),
            }
        }
        Ok(())
    };
    let is_kafka = match tokio::time::timeout(cfg.detect_timeout, detect).await {
        Ok(Ok(())) => frame::looks_like_kafka(&reader.buffer()[..8]),
        Ok(Err(CloseReason::ClientClosed)) if reader.buffered() == 0 => {
            return CloseReason::ClientClosed
        }
        Ok(Err(CloseReason::Io(e))) => return CloseReason::Io(e),
        // Fewer than 8 bytes then EOF or silence: not Kafka.
        _ => false,
    };
    if !is_kafka && !cfg.pass_through_non_kafka {
        return CloseReason::Frame(FrameError::NotKafka);
    }
    let upstream = match connect_upstream(shared, conn).await {
        Ok(s) => s,
        Err(reason) => return reason,
    };
    let (ur, uw) = upstream.into_split();
    if !is_kafka {
        return pass_through(shared, client_r, client_w, ur, uw, reader.take_all(), conn).await;
    }
    let (cr, cw) = (client_r, client_w);
    let state = Mutex::new(ConnState {
        pending: VecDeque::new(),
        client_done: false,
        sasl_mechanism: None,
    });
    let requests = relay_requests(shared, conn, reader, cr, uw, &state);
    let responses = relay_responses(shared, conn, ur, cw, &state);
    tokio::pin!(requests, responses);
    let reason = tokio::select! {
        r = &mut requests => match r {
            Err(reason) => reason,
            Ok(()) => {
                // The client is done sending: deliver what is still owed, then stop.
                if lock(&state).pending.is_empty() {
                    CloseReason::ClientClosed
                } else {
                    match responses.await {
                        Ok(()) | Err(CloseReason::UpstreamClosed) => CloseReason::ClientClosed,
                        Err(reason) => reason,
                    }
                }
            }
        },
        r = &mut responses => match r {
            Ok(()) => CloseReason::ClientClosed,
            Err(reason) => reason,
        },
    };
    // A broker may close the connection instead of answering a failed login (tansu does): a
    // SASL request left unanswered counts as failed.
    let unanswered: Vec<Pending> = lock(&state).pending.drain(..).collect();
    for p in &unanswered {
        if let PendingWork::Sasl { step, mechanism } = &p.work {
            shared.observer.sasl(&SaslEvent {
                conn,
                step: *step,
                mechanism,
                error_code: SASL_UNANSWERED,
            });
        }
    }
    reason
}

/// The error code a [`SaslEvent`] carries for a SASL request the connection closed on before
/// its answer: Kafka's UNKNOWN_SERVER_ERROR.
const SASL_UNANSWERED: i16 = -1;

/// Kafka's SASL_AUTHENTICATION_FAILED, for a SCRAM exchange the server refused in band.
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Relays a non-Kafka connection untouched, counting bytes.
async fn pass_through(
    shared: &Arc<Shared>,
    cr: &mut ReadHalf,
    cw: &mut WriteHalf,
    mut ur: ReadHalf,
    mut uw: WriteHalf,
    first: Bytes,
    conn: &ConnInfo,
) -> CloseReason {
    let obs = &shared.observer;
    let up = async {
        obs.passthrough(conn, Direction::ToBroker, first.len());
        uw.write_all(&first).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                uw.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            obs.passthrough(conn, Direction::ToBroker, n);
            uw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = ur.read(&mut buf).await?;
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            obs.passthrough(conn, Direction::ToClient, n);
            cw.write_all(&buf[..n]).await?;
        }
    };
    match tokio::try_join!(up, down) {
        Ok(_) => CloseReason::ClientClosed,
        Err(e) => CloseReason::Io(e.to_string()),
    }
}

struct ConnState {
    pending: VecDeque<Pending>,
    client_done: bool,
    /// The mechanism of the connection's SaslHandshake, for its SaslAuthenticate rounds.
    sasl_mechanism: Option<Arc<str>>,
}

/// What a response needs from its request.
struct Pending {
    correlation_id: i32,
    /// The API key as sent.
    api_key: i16,
    /// The codec's API to decode the response with; `None` for a request relayed undecoded,
    /// whose response is relayed undecoded too.
    decode_as: Option<ApiKey>,
    api_version: i16,
    client_id: Option<Arc<str>>,
    at: Instant,
    work: PendingWork,
}

enum PendingWork {
    None,
    /// (topic, partition) → (records, bytes) sent.
    Produce(HashMap<(Arc<str>, i32), (u64, u64)>),
    Commit {
        group: Arc<str>,
        transactional: bool,
        offsets: HashMap<(Arc<str>, i32), i64>,
    },
    /// (topic, partition) → the offset the Fetch asked from.
    Fetch(HashMap<(Arc<str>, i32), i64>),
    /// Partitions asked for their latest offset (timestamp −1).
    ListLatest(HashSet<(Arc<str>, i32)>),
    /// A SaslHandshake or SaslAuthenticate, with the connection's mechanism.
    Sasl {
        step: SaslStep,
        mechanism: Arc<str>,
    },
}

async fn relay_requests(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    mut reader: FrameReader,
    mut client: impl AsyncRead + Unpin,
    mut upstream: impl AsyncWrite + Unpin,
    state: &Mutex<ConnState>,
) -> Result<(), CloseReason> {
    let mut client_id: Option<Arc<str>> = None;
    loop {
        while let Some(frame) = reader.next_frame().map_err(CloseReason::Frame)? {
            handle_request(shared, conn, &frame, &mut client_id, state)?;
            upstream
                .write_all(&frame)
                .await
                .map_err(|e| CloseReason::Io(e.to_string()))?;
        }
        let want = reader.wanted();
        reader.buffer().reserve(want);
        match client.read_buf(reader.buffer()).await {
            Ok(0) => {
                reader.finish().map_err(CloseReason::Frame)?;
                lock(state).client_done = true;
                let _ = upstream.shutdown().await;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(CloseReason::Io(e.to_string())),
        }
    }
}

fn handle_request(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    frame: &Bytes,
    client_id: &mut Option<Arc<str>>,
    state: &Mutex<ConnState>,
) -> Result<(), CloseReason> {
    let at = Instant::now();
    let obs = &shared.observer;
    let req = match codec::decode_request(frame).map_err(CloseReason::Frame)? {
        Request::Decoded(r) => r,
        Request::Opaque(o) => {
            return relay_opaque(shared, conn, frame, &o, client_id, state, at);
        }
    };
    let h = &req.header;
    // Clients send the same id on every request: reuse the Arc instead of allocating.
    let id = h.client_id.as_deref();
    if client_id.as_deref() != id {
        *client_id = id.map(Arc::from);
    }
    obs.request(&RequestEvent {
        conn,
        api_key: h.request_api_key,
        api_name: api_name(h.request_api_key),
        api_version: h.request_api_version,
        correlation_id: h.correlation_id,
        client_id: id,
        bytes: frame.len(),
        // A SaslAuthenticate carries the credentials (PLAIN sends the password itself): no
        // observer ever sees them.
        body: (!matches!(req.body, RequestKind::SaslAuthenticate(_))).then_some(&req.body),
        at,
    });
    let work = match &req.body {
        RequestKind::Produce(p) => {
            let mut sent = HashMap::new();
            for t in &p.topic_data {
                let topic = shared.topic_name(t.name.as_str(), t.topic_id);
                for part in &t.partition_data {
                    let Some(data) = &part.records else { continue };
                    let detail = if shared.config.decode_records {
                        Detail::Records
                    } else {
                        Detail::Header
                    };
                    let (mut n, bytes) = (0u64, data.len() as u64);
                    match records::decode_batches(data, detail, &shared.limits) {
                        Ok(batches) => {
                            for batch in &batches {
                                n += batch.record_count.max(0) as u64;
                                obs.produced(&ProducedBatch {
                                    conn,
                                    client_id: id,
                                    topic: &topic,
                                    partition: part.index,
                                    batch,
                                    at,
                                });
                            }
                        }
                        Err(e) => {
                            // Still count what the headers say, so acks stay exact.
                            if let Ok(hs) =
                                records::decode_batches(data, Detail::Header, &shared.limits)
                            {
                                n = hs.iter().map(|b| b.record_count.max(0) as u64).sum();
                            }
                            record_failure(
                                shared,
                                conn,
                                Direction::ToBroker,
                                h.request_api_key,
                                h.request_api_version,
                                &e,
                            );
                        }
                    }
                    let e = sent.entry((topic.clone(), part.index)).or_insert((0, 0));
                    e.0 += n;
                    e.1 += bytes;
                }
            }
            PendingWork::Produce(sent)
        }
        RequestKind::OffsetCommit(c) => {
            let mut offsets = HashMap::new();
            for t in &c.topics {
                let topic = shared.topic_name(t.name.as_str(), t.topic_id);
                for p in &t.partitions {
                    offsets.insert((topic.clone(), p.partition_index), p.committed_offset);
                }
            }
            PendingWork::Commit {
                group: Arc::from(c.group_id.as_str()),
                transactional: false,
                offsets,
            }
        }
        RequestKind::TxnOffsetCommit(c) => {
            let mut offsets = HashMap::new();
            for t in &c.topics {
                let topic: Arc<str> = Arc::from(t.name.as_str());
                for p in &t.partitions {
                    offsets.insert((topic.clone(), p.partition_index), p.committed_offset);
                }
            }
            PendingWork::Commit {
                group: Arc::from(c.group_id.as_str()),
                transactional: true,
                offsets,
            }
        }
        RequestKind::ListOffsets(l) => {
            let mut latest = HashSet::new();
            for t in &l.topics {
                for p in t.partitions.iter().filter(|p| p.timestamp == -1) {
                    latest.insert((Arc::from(t.name.as_str()), p.partition_index));
                }
            }
            PendingWork::ListLatest(latest)
        }
        RequestKind::Fetch(f) => {
            let mut from = HashMap::new();
            for t in &f.topics {
                let topic = shared.topic_name(t.topic.as_str(), t.topic_id);
                for part in &t.partitions {
                    from.insert((topic.clone(), part.partition), part.fetch_offset);
                }
            }
            PendingWork::Fetch(from)
        }
        RequestKind::SaslHandshake(h) => {
            let mechanism: Arc<str> = Arc::from(h.mechanism.as_str());
            lock(state).sasl_mechanism = Some(mechanism.clone());
            PendingWork::Sasl {
                step: SaslStep::Handshake,
                mechanism,
            }
        }
        RequestKind::SaslAuthenticate(_) => PendingWork::Sasl {
            step: SaslStep::Authenticate,
            mechanism: lock(state)
                .sasl_mechanism
                .clone()
                .unwrap_or_else(|| Arc::from("unknown")),
        },
        _ => PendingWork::None,
    };
    if codec::expects_response(Some(&req.body)) {
        await_response(
            shared,
            state,
            Pending {
                correlation_id: h.correlation_id,
                api_key: h.request_api_key,
                decode_as: Some(req.api_key),
                api_version: h.request_api_version,
                client_id: client_id.clone(),
                at,
                work,
            },
        )?;
    }
    Ok(())
}

/// Queues a request's [`Pending`] entry for its response, within `max_in_flight`.
fn await_response(
    shared: &Shared,
    state: &Mutex<ConnState>,
    pending: Pending,
) -> Result<(), CloseReason> {
    let mut st = lock(state);
    if st.pending.len() >= shared.config.max_in_flight {
        return Err(CloseReason::Frame(FrameError::TooManyInFlight(
            shared.config.max_in_flight,
        )));
    }
    st.pending.push_back(pending);
    Ok(())
}

/// Reports a request the codec cannot decode and queues it for its response, which is relayed
/// undecoded: the proxy stays transparent to APIs and versions newer than its codec.
fn relay_opaque(
    shared: &Shared,
    conn: &ConnInfo,
    frame: &Bytes,
    o: &OpaqueRequest,
    client_id: &mut Option<Arc<str>>,
    state: &Mutex<ConnState>,
    at: Instant,
) -> Result<(), CloseReason> {
    // The client id comes from the bytes after the correlation id (headers v1 and v2); keep
    // the connection's last known one when they do not read as one.
    if let Some(id) = o.client_id.as_deref() {
        if client_id.as_deref() != Some(id) {
            *client_id = Some(Arc::from(id));
        }
    }
    let obs = &shared.observer;
    obs.request(&RequestEvent {
        conn,
        api_key: o.api_key,
        api_name: api_name(o.api_key),
        api_version: o.api_version,
        correlation_id: o.correlation_id,
        client_id: client_id.as_deref(),
        bytes: frame.len(),
        body: None,
        at,
    });
    obs.relayed_opaque(&OpaqueRelay {
        conn,
        api_key: o.api_key,
        api_name: api_name(o.api_key),
        api_version: o.api_version,
        correlation_id: o.correlation_id,
        reason: o.reason,
        detail: &o.detail,
    });
    tracing::debug!(conn = conn.id, api_key = o.api_key, api_version = o.api_version,
        reason = o.reason.label(), detail = %o.detail, "relaying a request undecoded");
    await_response(
        shared,
        state,
        Pending {
            correlation_id: o.correlation_id,
            api_key: o.api_key,
            decode_as: None,
            api_version: o.api_version,
            client_id: client_id.clone(),
            at,
            work: PendingWork::None,
        },
    )
}

fn record_failure(
    shared: &Shared,
    conn: &ConnInfo,
    direction: Direction,
    api_key: i16,
    api_version: i16,
    e: &records::RecordError,
) {
    shared.observer.decode_failed(&DecodeFailure {
        conn,
        direction,
        api_name: api_name(api_key),
        api_version,
        label: e.label(),
        reason: &e.to_string(),
    });
}

async fn relay_responses(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    mut upstream: impl AsyncRead + Unpin,
    mut client: impl AsyncWrite + Unpin,
    state: &Mutex<ConnState>,
) -> Result<(), CloseReason> {
    let mut reader = FrameReader::new(shared.config.max_frame_bytes, MIN_RESPONSE_BYTES);
    loop {
        while let Some(frame) = reader.next_frame().map_err(CloseReason::Frame)? {
            let out = handle_response(shared, conn, frame, state);
            client
                .write_all(&out)
                .await
                .map_err(|e| CloseReason::Io(e.to_string()))?;
            let st = lock(state);
            if st.client_done && st.pending.is_empty() {
                return Ok(());
            }
        }
        let want = reader.wanted();
        reader.buffer().reserve(want);
        match upstream.read_buf(reader.buffer()).await {
            Ok(0) => {
                let _ = client.shutdown().await;
                return Err(CloseReason::UpstreamClosed);
            }
            Ok(_) => {}
            Err(e) => return Err(CloseReason::Io(e.to_string())),
        }
    }
}

/// Handles one response frame and returns what to send to the client (the frame itself, or
/// its re-encoding when broker addresses were rewritten).
fn handle_response(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    frame: Bytes,
    state: &Mutex<ConnState>,
) -> Bytes {
    let at = Instant::now();
    let obs = &shared.observer;
    let corr = codec::response_correlation_id(&frame).unwrap_or(i32::MIN);
    let pending = {
        let mut st = lock(state);
        match st.pending.iter().position(|p| p.correlation_id == corr) {
            Some(i) => {
                // Earlier entries never get a response (e.g. acks=0 Produce of an unknown version).
                st.pending.drain(..i);
                st.pending.pop_front()
            }
            None => None,
        }
    };
    let Some(p) = pending else {
        obs.decode_failed(&DecodeFailure {
            conn,
            direction: Direction::ToClient,
            api_name: "Unknown",
            api_version: -1,
            label: "unmatched_response",
            reason: "no request with this correlation id",
        });
        return frame;
    };
    let key = p.api_key;
    let client_id = p.client_id.as_deref();
    let fail = |label: &'static str, reason: &str| {
        obs.decode_failed(&DecodeFailure {
            conn,
            direction: Direction::ToClient,
            api_name: api_name(key),
            api_version: p.api_version,
            label,
            reason,
        });
    };
    let mut out = frame.clone();
    let mut errors = Vec::new();
    let mut rewritten = false;
    let decoded = p
        .decode_as
        .map(|api| (api, codec::decode_response(&frame, api, p.api_version)));
    let body = match decoded {
        // The request was relayed undecoded, and so is its response: it may be of an API or
        // version the codec does not know, and decoding it as anything else would be a guess.
        None => None,
        Some((api, Ok(Some((header, mut body))))) => {
            codec::error_codes(&body, &mut errors);
            if let ResponseKind::Metadata(m) = &body {
                let mut topics = shared.topics.write().unwrap_or_else(|e| e.into_inner());
                for t in &m.topics {
                    if let Some(name) = &t.name {
                        if !t.topic_id.is_nil() {
                            topics.insert(t.topic_id, Arc::from(name.as_str()));
                        }
                    }
                }
            }
            if rewrite::may_carry_addresses(&body) {
                let host = shared.advertised_host.clone();
                let mut map = |h: &str, port: i32| {
                    shared
                        .listener_for(h, port)
                        .map(|a| (host.clone(), i32::from(a.port())))
                };
                if rewrite::rewrite_addresses(&mut body, &mut map) {
                    match codec::encode_response(&header, &body, api, p.api_version) {
                        Ok(b) => {
                            out = b;
                            rewritten = true;
                        }
                        Err(e) => fail("reencode", &e),
                    }
                }
            }
            observe_response_body(shared, conn, &p, &body, at);
            Some(body)
        }
        Some((_, Ok(None))) => {
            fail(
                "unsupported_version",
                "the codec does not know this version; relayed undecoded",
            );
            None
        }
        Some((_, Err(e))) => {
            fail("malformed_response", &e);
            None
        }
    };
    obs.response(&ResponseEvent {
        conn,
        api_key: key,
        api_name: api_name(key),
        api_version: p.api_version,
        correlation_id: corr,
        client_id,
        bytes: out.len(),
        latency: at.saturating_duration_since(p.at),
        error_codes: &errors,
        body: body.as_ref(),
        rewritten,
        at,
    });
    out
}

fn observe_response_body(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    p: &Pending,
    body: &ResponseKind,
    at: Instant,
) {
    let obs = &shared.observer;
    let client_id = p.client_id.as_deref();
    match (body, &p.work) {
        (ResponseKind::Produce(r), PendingWork::Produce(sent)) => {
            for t in &r.responses {
                let topic = shared.topic_name(t.name.as_str(), t.topic_id);
                for part in &t.partition_responses {
                    let (records, bytes) = sent
                        .get(&(topic.clone(), part.index))
                        .copied()
                        .unwrap_or((0, 0));
                    obs.produce_acked(&ProduceAck {
                        conn,
                        client_id,
                        topic: &topic,
                        partition: part.index,
                        error_code: part.error_code,
                        base_offset: part.base_offset,
                        record_count: records,
                        record_bytes: bytes,
                        log_append_time_ms: part.log_append_time_ms,
                        request_at: p.at,
                        acked_at: at,
                    });
                    if part.error_code == 0 && part.base_offset >= 0 && records > 0 {
                        obs.watermark(&Watermark {
                            topic: &topic,
                            partition: part.index,
                            offset: part.base_offset.saturating_add(records as i64),
                            source: WatermarkSource::Produce,
                            at,
                        });
                    }
                }
            }
        }
        (ResponseKind::Fetch(r), work) => {
            let from = match work {
                PendingWork::Fetch(from) => Some(from),
                _ => None,
            };
            let detail = if shared.config.decode_records {
                Detail::Records
            } else {
                Detail::Header
            };
            for t in &r.responses {
                let topic = shared.topic_name(t.topic.as_str(), t.topic_id);
                for part in &t.partitions {
                    if part.error_code == 0 && part.high_watermark >= 0 {
                        obs.watermark(&Watermark {
                            topic: &topic,
                            partition: part.partition_index,
                            offset: part.high_watermark,
                            source: WatermarkSource::Fetch,
                            at,
                        });
                    }
                    let Some(data) = &part.records else { continue };
                    let fetch_offset = from
                        .and_then(|f| f.get(&(topic.clone(), part.partition_index)))
                        .copied()
                        .unwrap_or(-1);
                    match records::decode_batches(data, detail, &shared.limits) {
                        Ok(batches) => {
                            for batch in &batches {
                                obs.fetched(&FetchedBatch {
                                    conn,
                                    client_id,
                                    topic: &topic,
                                    partition: part.partition_index,
                                    batch,
                                    high_watermark: part.high_watermark,
                                    fetch_offset,
                                    at,
                                });
                            }
                        }
                        Err(e) => record_failure(
                            shared,
                            conn,
                            Direction::ToClient,
                            p.api_key,
                            p.api_version,
                            &e,
                        ),
                    }
                }
            }
        }
        (
            ResponseKind::OffsetCommit(_) | ResponseKind::TxnOffsetCommit(_),
            PendingWork::Commit {
                group,
                transactional,
                offsets,
            },
        ) => {
            let emit = |topic: Arc<str>, partition: i32, error_code: i16| {
                if let Some(&offset) = offsets.get(&(topic.clone(), partition)) {
                    obs.offset_committed(&OffsetCommitEvent {
                        conn,
                        client_id,
                        group,
                        topic: &topic,
                        partition,
                        offset,
                        error_code,
                        transactional: *transactional,
                        at,
                    });
                }
            };
            match body {
                ResponseKind::OffsetCommit(r) => {
                    for t in &r.topics {
                        let topic = shared.topic_name(t.name.as_str(), t.topic_id);
                        for part in &t.partitions {
                            emit(topic.clone(), part.partition_index, part.error_code);
                        }
                    }
                }
                ResponseKind::TxnOffsetCommit(r) => {
                    for t in &r.topics {
                        let topic: Arc<str> = Arc::from(t.name.as_str());
                        for part in &t.partitions {
                            emit(topic.clone(), part.partition_index, part.error_code);
                        }
                    }
                }
                _ => {}
            }
        }
        (ResponseKind::SaslHandshake(r), PendingWork::Sasl { step, mechanism }) => {
            obs.sasl(&SaslEvent {
                conn,
                step: *step,
                mechanism,
                error_code: r.error_code,
            });
        }
        (ResponseKind::SaslAuthenticate(r), PendingWork::Sasl { step, mechanism }) => {
            // A SCRAM server may refuse the proof inside the exchange (RFC 5802's
            // server-final-message `e=...`) with error code 0, as tansu does: that is a failed
            // login too. The server's messages carry no secret (nonce, salt, verifier).
            let refused_in_band =
                mechanism.starts_with("SCRAM-") && r.auth_bytes.starts_with(b"e=");
            let error_code = match r.error_code {
                0 if refused_in_band => SASL_AUTHENTICATION_FAILED,
                code => code,
            };
            obs.sasl(&SaslEvent {
                conn,
                step: *step,
                mechanism,
                error_code,
            });
        }
        (ResponseKind::ListOffsets(r), PendingWork::ListLatest(latest)) => {
            for t in &r.topics {
                let topic: Arc<str> = Arc::from(t.name.as_str());
                for part in &t.partitions {
                    let asked = latest.contains(&(topic.clone(), part.partition_index));
                    if asked && part.error_code == 0 && part.offset >= 0 {
                        obs.watermark(&Watermark {
                            topic: t.name.as_str(),
                            partition: part.partition_index,
                            offset: part.offset,
                            source: WatermarkSource::ListOffsets,
                            at,
                        });
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{decode_request, decode_response, encode_request, encode_response};
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        BrokerId, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::StrBytes;

    /// Records connection closes and requests relayed undecoded.
    #[derive(Default)]
    struct Closes(Mutex<Vec<&'static str>>, Mutex<Vec<(i16, &'static str)>>);

    impl Observer for Closes {
        fn connection_closed(&self, _conn: &ConnInfo, reason: &CloseReason) {
            lock(&self.0).push(reason.label());
        }
        fn relayed_opaque(&self, e: &OpaqueRelay<'_>) {
            lock(&self.1).push((e.api_key, e.reason.label()));
        }
    }

    /// What the fake broker answers to an API the codec does not know: its correlation id
    /// and these bytes, which decode as no response the codec knows.
    const NEWER_API_ANSWER: &[u8] = b"\xff\xfe an API newer than the proxy";

    /// A fake broker newer than the codec: it answers every Metadata request with two
    /// brokers, itself (as `127.0.0.1:<its port>`) and `other:9092`, and any request the
    /// codec cannot decode with [`NEWER_API_ANSWER`].
    async fn fake_broker() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut r = FrameReader::new(1 << 20, MIN_REQUEST_BYTES);
                    loop {
                        while let Ok(Some(f)) = r.next_frame() {
                            let req = match decode_request(&f).unwrap() {
                                Request::Decoded(req) => req,
                                Request::Opaque(o) => {
                                    let mut out = BytesMut::new();
                                    out.put_i32(4 + NEWER_API_ANSWER.len() as i32);
                                    out.put_i32(o.correlation_id);
                                    out.put_slice(NEWER_API_ANSWER);
                                    if s.write_all(&out).await.is_err() {
                                        return;
                                    }
                                    continue;
                                }
                            };
                            let mut body = MetadataResponse::default();
                            for (id, host, port) in
                                [(1, "127.0.0.1", i32::from(addr.port())), (2, "other", 9092)]
                            {
                                let mut b = MetadataResponseBroker::default();
                                b.node_id = BrokerId(id);
                                b.host = StrBytes::from_static_str(host);
                                b.port = port;
                                body.brokers.push(b);
                            }
                            let mut h = ResponseHeader::default();
                            h.correlation_id = req.header.correlation_id;
                            let v = req.header.request_api_version;
                            let out = encode_response(
                                &h,
                                &ResponseKind::Metadata(body),
                                ApiKey::Metadata,
                                v,
                            )
                            .unwrap();
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        r.buffer().reserve(4096);
                        match s.read_buf(r.buffer()).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        addr
    }

    fn metadata_request(corr: i32) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::Metadata as i16;
        h.request_api_version = 12;
        h.correlation_id = corr;
        h.client_id = Some(StrBytes::from_static_str("t"));
        encode_request(&h, &RequestKind::Metadata(MetadataRequest::default())).unwrap()
    }

    async fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
        let mut r = FrameReader::new(1 << 20, MIN_RESPONSE_BYTES);
        loop {
            if let Some(f) = r.next_frame().unwrap() {
                return Some(f);
            }
            r.buffer().reserve(4096);
            if s.read_buf(r.buffer()).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    #[tokio::test]
    async fn rewrites_brokers_and_isolates_bad_connections() {
        let broker = fake_broker().await;
        let closes = Arc::new(Closes::default());
        let cfg = ProxyConfig::new(broker.to_string(), "127.0.0.1:0".parse().unwrap());
        let proxy = Proxy::start(cfg, closes.clone()).await.unwrap();
        let boot = proxy.bootstrap_addr();

        let mut good = TcpStream::connect(boot).await.unwrap();
        good.write_all(&metadata_request(1)).await.unwrap();
        let resp = read_frame(&mut good).await.unwrap();
        let (h, body) = decode_response(&resp, ApiKey::Metadata, 12)
            .unwrap()
            .unwrap();
        assert_eq!(h.correlation_id, 1);
        let ResponseKind::Metadata(m) = body else {
            panic!("not metadata")
        };
        let listeners = proxy.listeners();
        assert_eq!(listeners.len(), 2, "{listeners:?}");
        assert_eq!(listeners[1].upstream, "other:9092");
        let addrs: Vec<_> = m
            .brokers
            .iter()
            .map(|b| (b.host.to_string(), b.port))
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("127.0.0.1".to_string(), i32::from(boot.port())),
                (
                    "127.0.0.1".to_string(),
                    i32::from(listeners[1].listen.port())
                ),
            ]
        );

        // A request of an API key the codec does not know (999), pipelined with a Metadata
        // request: both are answered, in order, on the same connection; the unknown API's
        // answer byte for byte, the Metadata one decoded and rewritten.
        let mut unknown_key = 8i32.to_be_bytes().to_vec();
        unknown_key.extend_from_slice(&[0x03, 0xe7, 0, 0, 0, 0, 0, 3]);
        let mut pipelined = unknown_key.clone();
        pipelined.extend_from_slice(&metadata_request(4));
        good.write_all(&pipelined).await.unwrap();
        let answer = read_frame(&mut good)
            .await
            .expect("the unknown API is answered");
        let mut want = (4 + NEWER_API_ANSWER.len() as i32).to_be_bytes().to_vec();
        want.extend_from_slice(&3i32.to_be_bytes());
        want.extend_from_slice(NEWER_API_ANSWER);
        assert_eq!(&answer[..], &want[..]);
        let resp = read_frame(&mut good).await.unwrap();
        let (h, body) = decode_response(&resp, ApiKey::Metadata, 12)
            .unwrap()
            .unwrap();
        assert_eq!(h.correlation_id, 4);
        let ResponseKind::Metadata(m) = body else {
            panic!("not metadata")
        };
        assert_eq!(m.brokers[0].port, i32::from(boot.port()), "still rewritten");
        assert_eq!(lock(&closes.1).clone(), vec![(999, "unknown_api_key")]);

        // Each bad client is closed; the good one keeps working.
        let mut too_big = 0x7fff_ffffi32.to_be_bytes().to_vec();
        too_big.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1]);
        let truncated = metadata_request(5)[..15].to_vec();
        for (i, bad) in [too_big, truncated].into_iter().enumerate() {
            let mut s = TcpStream::connect(boot).await.unwrap();
            s.write_all(&bad).await.unwrap();
            s.shutdown().await.unwrap();
            let got = read_frame(&mut s).await;
            assert!(got.is_none(), "bad input {i} got {got:?}");
            good.write_all(&metadata_request(2)).await.unwrap();
            let resp = read_frame(&mut good).await.unwrap();
            assert_eq!(crate::wire::codec::response_correlation_id(&resp), Some(2));
        }
        drop(good);
        proxy.shutdown().await;
        let labels = lock(&closes.0).clone();
        for want in ["frame_too_large", "truncated"] {
            assert!(labels.contains(&want), "{want} not in {labels:?}");
        }
        assert!(!labels.contains(&"unknown_api_key"), "{labels:?}");
    }
}
