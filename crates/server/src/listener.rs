//! Binding, the accept loops and the shutdown sequence.
//!
//! The main port's accept loop runs on the caller's thread; with `--plain-port`, a second one
//! runs on an `accept-plain` thread. Both share one [`Acceptor`]: the registry (which checks
//! `--max-connections` and `--max-connections-per-ip` and registers under one lock), the
//! refuser, the list of workers and the connection numbers; each accepted connection gets a
//! `client-<n>` thread and its port's rules ([`Port`]: TLS or plain). Shutdown, triggered from
//! any thread through a [`ShutdownHandle`], sets a flag and wakes every blocking `accept()` by
//! connecting to our own addresses (as tiny-http does); the loops then stop accepting and
//! every connection is closed:
//!
//! 1. shut down the *reading* side of every client socket: idle workers blocked in a read wake
//!    up, and they (and workers between chunks, which see the flag) still can write a
//!    `ShuttingDown` error to their client;
//! 2. give them [`GRACE`] to do so;
//! 3. shut down both sides of whatever is left (a worker blocked writing to a stalled client);
//! 4. join the workers, but never wait past [`JOIN_LIMIT`]: a worker stuck in a file read on a
//!    dead network mount must not keep the server from exiting.

use crate::config::Config;
use crate::connection::{self, Port, ServerState};
use crate::error::ServerError;
use crate::limits::RateLimiter;
use crate::link::Pace;
use crate::refuse::{LogThrottle, Reason, Refusal, Refuser};
use crate::registry::{ConnectionInfo, Limits, Registry};
use crate::store::{self, Pruner};
use crate::uploads::{Cleaner, Uploads};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How long workers get to say goodbye before their sockets are closed under them.
pub const GRACE: Duration = Duration::from_millis(300);

/// The longest the shutdown waits for workers after closing their sockets.
pub const JOIN_LIMIT: Duration = Duration::from_millis(1500);

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 1024;

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The `--plain-port` listener, if any.
    plain: Option<(TcpListener, SocketAddr)>,
    /// The main port's rules.
    port: Arc<Port>,
    limits: Limits,
    /// How long transfer history is kept (`None`: forever).
    history: Option<Duration>,
    state: Arc<ServerState>,
    waker: Arc<Waker>,
}

/// Stops a running server from any thread. Cheap to clone; [`shutdown`](Self::shutdown) is
/// idempotent.
#[derive(Clone)]
pub struct ShutdownHandle {
    state: Arc<ServerState>,
    waker: Arc<Waker>,
}

/// What it takes to wake the blocking `accept()`s.
struct Waker {
    /// Where to connect to wake them.
    addrs: Vec<SocketAddr>,
    /// Clones of the listening sockets, as a fallback: on Linux, shutting one down makes a
    /// blocked `accept()` return. Emptied once the server has stopped, so the ports are
    /// released.
    listeners: Mutex<Vec<Socket>>,
}

impl Server {
    /// Prepares the root (creating it if missing), opens the state database and binds the
    /// listening socket.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let root = prepare_root(&config.root)?;
        let store = store::open(config.state_dir.as_deref(), &root, config.history)?;
        let uploads = Uploads::open(&root, store.clone(), config.uploads.clone())?;
        let listener = listen(config.bind, config.port)?;
        let local_addr = listener.local_addr()?;
        let mut fallbacks = vec![Socket::from(listener.try_clone()?)];
        let mut addrs = vec![wake_addr(local_addr)];
        let plain = match config.plain_port {
            Some(port) => {
                let l = listen(config.bind, port)?;
                let addr = l.local_addr()?;
                fallbacks.push(Socket::from(l.try_clone()?));
                addrs.push(wake_addr(addr));
                Some((l, addr))
            }
            None => None,
        };
        let auth = config.access.is_some();
        let root_dir = crate::beneath::RootDir::open(&root)
            .map_err(|e| tracing::debug!("the root stays closed ({e}); files are found by path"))
            .ok();
        let state = Arc::new(ServerState {
            root,
            root_dir,
            timeout: config.timeout,
            opening: config.opening_time(),
            pace: Pace {
                window: config.timeout,
                min_rate: config.min_rate,
            },
            stop: Default::default(),
            registry: Arc::new(Registry::new()),
            store,
            uploads: Arc::new(uploads),
            max_list_entries: config.max_list_entries,
            access: config.access,
            limiter: RateLimiter::new(config.rate_limit),
        });
        Ok(Server {
            listener,
            local_addr,
            plain,
            port: Arc::new(Port {
                tls: config.tls,
                auth,
            }),
            limits: Limits {
                total: config.max_connections,
                per_address: config.max_connections_per_ip,
            },
            history: config.history,
            state,
            waker: Arc::new(Waker {
                addrs,
                listeners: Mutex::new(fallbacks),
            }),
        })
    }

    /// The address of the `--plain-port` listener, if there is one.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(|(_, a)| *a)
    }

    /// The address actually listened on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The canonical served root.
    pub fn root(&self) -> &Path {
        &self.state.root
    }

    /// The state database (digest cache and transfer history).
    pub fn state_db(&self) -> &Arc<sfts_state::StateDb> {
        self.state.store.db()
    }

    /// A handle that stops [`run`](Self::run) from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: Arc::clone(&self.state),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Accepts and serves connections until shutdown, then closes them all and joins the
    /// workers.
    pub fn run(self) -> Result<(), ServerError> {
        let Server {
            listener,
            local_addr,
            plain,
            port,
            limits,
            history,
            state,
            waker,
        } = self;
        // Stopped (and joined) when `run` returns, however it returns; the state writer
        // last, after the workers, so it commits what they recorded.
        let _writer = state.store.start_writer();
        let _pruner = Pruner::start(&state.store, history);
        let _cleaner = Cleaner::start(&state.uploads);
        log_setup(
            &state,
            &port,
            local_addr,
            plain.as_ref().map(|p| p.1),
            limits,
        );
        let acceptor = Arc::new(Acceptor {
            state: Arc::clone(&state),
            limits,
            refuser: Mutex::new(Refuser::start()),
            workers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            log: Mutex::new(LogThrottle::default()),
        });
        let plain_loop = plain.and_then(|(l, _)| {
            let acceptor = Arc::clone(&acceptor);
            let plain_port = Arc::new(Port {
                tls: None,
                auth: port.auth,
            });
            thread::Builder::new()
                .name("accept-plain".into())
                .spawn(move || acceptor.accept_loop(&l, &plain_port))
                .map_err(|e| error!("cannot start the accept loop of --plain-port: {e}"))
                .ok()
        });
        acceptor.accept_loop(&listener, &port);
        drop(listener);
        if let Some(h) = plain_loop {
            // The loop has seen the flag (the waker woke it too); it ends and drops its socket.
            let _ = h.join();
        }
        if let Ok(mut l) = waker.listeners.lock() {
            l.clear();
        }
        acceptor.close_all();
        Ok(())
    }
}

/// Logs what the server is about to serve, and how.
fn log_setup(
    state: &ServerState,
    port: &Port,
    local_addr: SocketAddr,
    plain: Option<SocketAddr>,
    limits: Limits,
) {
    let policy = &state.uploads.policy;
    if policy.allow {
        info!(
            "uploads allowed (up to {}; existing files {}; unfinished uploads kept {})",
            policy
                .max_size
                .map_or("any size".into(), crate::units::bytes_text),
            if policy.overwrite {
                "replaced on --force"
            } else {
                "never replaced"
            },
            crate::units::duration_text(policy.ttl)
        );
    } else {
        info!("read-only: uploads are refused (start with --allow-upload to accept them)");
    }
    match &state.access {
        Some(access) => info!(
            "access tokens required: {} token(s) in the access file; the original protocol is \
             refused",
            access.len()
        ),
        None => info!("no access tokens required (start with --auth-file to require them)"),
    }
    if port.tls.is_some() {
        info!("TLS on {local_addr}: native clients must use TLS (sfts-client --tls)");
    }
    if let Some(plain) = plain {
        warn!(
            "plain TCP on {plain} (--plain-port): traffic there, tokens included, is not \
             encrypted"
        );
    }
    info!(
        "serving {} on {local_addr} (at most {} connections, {} per address; {} s idle \
         timeout, {} s to open a session, at least {} bytes/s per transfer, {})",
        state.root.display(),
        limits.total,
        limits.per_address,
        state.timeout.as_secs(),
        state.opening.as_secs(),
        state.pace.min_rate,
        match state.limiter.rate() {
            0 => "no request rate limit".to_string(),
            r => format!("{r} requests/s per address"),
        }
    );
}

/// What the accept loops share.
struct Acceptor {
    state: Arc<ServerState>,
    limits: Limits,
    refuser: Mutex<Refuser>,
    workers: Mutex<Vec<(u64, JoinHandle<()>)>>,
    next_id: AtomicU64,
    /// Refusals are logged, but not a flood of them.
    log: Mutex<LogThrottle>,
}

impl Acceptor {
    /// Accepts on `listener` until shutdown; each connection is served with `port`'s rules.
    fn accept_loop(&self, listener: &TcpListener, port: &Arc<Port>) {
        let state = &self.state;
        loop {
            let accepted = listener.accept();
            if state.stopping() {
                break;
            }
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            self.reap();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let clone = match stream.try_clone() {
                Ok(c) => c,
                Err(e) => {
                    warn!("dropping connection from {peer}: {e}");
                    continue;
                }
            };
            match state.registry.admit(id, peer, clone, self.limits) {
                Ok(guard) => {
                    if let Some(handle) = spawn_worker(state, port, id, stream, peer, guard) {
                        lock(&self.workers).push((id, handle));
                    }
                }
                Err(reason) => {
                    lock(&self.log).warn(|| match reason {
                        Reason::Full { active, limit } => format!(
                            "refused {peer}: server busy ({active} connections active, limit \
                             {limit})"
                        ),
                        Reason::Address { limit } => format!(
                            "refused {peer}: too many connections from its address (limit \
                             {limit}, --max-connections-per-ip)"
                        ),
                    });
                    lock(&self.refuser).refuse(Refusal {
                        stream,
                        peer,
                        reason,
                        port: Arc::clone(port),
                    });
                }
            }
        }
    }

    /// Joins the workers that have finished, so the list only holds live ones.
    fn reap(&self) {
        let done: Vec<_> = {
            let mut workers = lock(&self.workers);
            let (done, live): (Vec<_>, Vec<_>) =
                workers.drain(..).partition(|(_, h)| h.is_finished());
            *workers = live;
            done
        };
        for (id, h) in done {
            if h.join().is_err() {
                error!("worker client-{id} panicked");
            }
        }
    }

    /// The shutdown sequence described in the module documentation.
    fn close_all(&self) {
        let state = &self.state;
        let open = state.registry.shutdown_all(Shutdown::Read);
        info!("shutting down: closing {open} active connection(s)");
        let grace_end = Instant::now() + GRACE;
        while !state.registry.is_empty() && Instant::now() < grace_end {
            thread::sleep(Duration::from_millis(10));
        }
        state.registry.shutdown_all(Shutdown::Both);
        let deadline = Instant::now() + JOIN_LIMIT;
        lock(&self.refuser).shutdown(deadline);
        let workers = std::mem::take(&mut *lock(&self.workers));
        for (id, h) in workers {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if !h.is_finished() {
                warn!("worker client-{id} did not stop in time; not waiting for it");
            } else if h.join().is_err() {
                error!("worker client-{id} panicked");
            }
        }
        info!("shutdown complete");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShutdownHandle {
    /// Asks the server to stop: no new connections, every open one closed, workers joined.
    /// Returns at once; [`Server::run`] returns when the shutdown is complete.
    pub fn shutdown(&self) {
        if self.state.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        info!("shutdown requested");
        self.waker.wake();
    }

    /// True once [`shutdown`](Self::shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.state.stopping()
    }

    /// A snapshot of the active connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.state.registry.snapshot()
    }

    /// Waits until the transfer history rows and digest-cache entries recorded so far are in
    /// the state database (a background thread writes them within 100 ms).
    pub fn flush_state(&self) {
        self.state.store.flush();
    }
}

impl Waker {
    fn wake(&self) {
        let mut all_woken = true;
        for addr in &self.addrs {
            let mut targets = vec![*addr];
            if addr.is_ipv6() {
                // A dual-stack socket also answers on IPv4, should IPv6 loopback be
                // unavailable.
                targets.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()));
            }
            all_woken &= targets
                .iter()
                .any(|t| TcpStream::connect_timeout(t, Duration::from_secs(1)).is_ok());
        }
        if all_woken {
            return;
        }
        if let Ok(guard) = self.listeners.lock() {
            for sock in guard.iter() {
                let _ = sock.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Where to connect to reach a listener bound to `local`: loopback for the wildcard addresses.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Checks the root, creating it if missing, and returns its canonical form.
fn prepare_root(path: &Path) -> Result<PathBuf, ServerError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ServerError::RootNotADirectory {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|source| ServerError::RootCreate {
                path: path.to_path_buf(),
                source,
            })?;
            info!("created served root {}", path.display());
        }
        Err(source) => {
            return Err(ServerError::RootAccess {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    std::fs::canonicalize(path).map_err(|source| ServerError::RootAccess {
        path: path.to_path_buf(),
        source,
    })
}

/// Binds `bind:port`, or by default `[::]:port` dual-stack, falling back to `0.0.0.0:port`
/// when the machine has no IPv6.
fn listen(bind: Option<IpAddr>, port: u16) -> Result<TcpListener, ServerError> {
    if let Some(ip) = bind {
        return listen_on(SocketAddr::new(ip, port), false);
    }
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match listen_on(any6, true) {
        Err(ServerError::Bind { source, .. })
            if !matches!(
                source.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
            ) =>
        {
            info!("IPv6 is not available ({source}); listening on IPv4 only");
            listen_on(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), false)
        }
        other => other,
    }
}

fn listen_on(addr: SocketAddr, dual_stack: bool) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        // Explicit: the OS default differs between systems (and sysctls).
        socket.set_only_v6(!dual_stack).map_err(err)?;
    }
    // Lets a restarted server reuse its port while old connections sit in TIME_WAIT. (On
    // Windows the option means something else: it would let two servers share a port.)
    #[cfg(not(windows))]
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)?;
    Ok(socket.into())
}

/// Starts the `client-<id>` thread of a registered connection.
fn spawn_worker(
    state: &Arc<ServerState>,
    port: &Arc<Port>,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    guard: crate::registry::ConnectionGuard,
) -> Option<JoinHandle<()>> {
    let st = Arc::clone(state);
    let port = Arc::clone(port);
    // If the thread cannot start, the closure (and with it the guard) is dropped, which
    // unregisters the connection.
    thread::Builder::new()
        .name(format!("client-{id}"))
        .spawn(move || connection::handle(stream, peer, guard, &st, &port))
        .map_err(|e| error!("cannot start a thread for {peer}: {e}"))
        .ok()
}
