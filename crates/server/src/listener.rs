//! Binding, the accept loop and the shutdown sequence.
//!
//! The accept loop runs on the caller's thread and starts one `client-<n>` thread per
//! connection. Shutdown, triggered from any thread through a [`ShutdownHandle`], sets a flag and
//! wakes the blocking `accept()` by connecting to our own address (as tiny-http does); the loop
//! then stops accepting and closes every connection:
//!
//! 1. shut down the *reading* side of every client socket: idle workers blocked in a read wake
//!    up, and they (and workers between chunks, which see the flag) still can write a
//!    `ShuttingDown` error to their client;
//! 2. give them [`GRACE`] to do so;
//! 3. shut down both sides of whatever is left (a worker blocked writing to a stalled client);
//! 4. join the workers, but never wait past [`JOIN_LIMIT`]: a worker stuck in a file read on a
//!    dead network mount must not keep the server from exiting.

use crate::config::Config;
use crate::connection::{self, ServerState};
use crate::error::ServerError;
use crate::refuse::Refusers;
use crate::registry::{ConnectionInfo, Registry};
use crate::store::{self, Pruner};
use crate::uploads::{Cleaner, Uploads};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
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
    max_connections: usize,
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

/// What it takes to wake a blocking `accept()`.
struct Waker {
    /// Where to connect to wake it.
    addr: SocketAddr,
    /// A clone of the listening socket, as a fallback: on Linux, shutting it down makes a
    /// blocked `accept()` return. `None` once the server has stopped, so the port is released.
    listener: Mutex<Option<Socket>>,
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
        let fallback = Socket::from(listener.try_clone()?);
        let state = Arc::new(ServerState {
            root,
            timeout: config.timeout,
            stop: Default::default(),
            registry: Arc::new(Registry::new()),
            store,
            uploads: Arc::new(uploads),
            max_list_entries: config.max_list_entries,
        });
        Ok(Server {
            listener,
            local_addr,
            max_connections: config.max_connections,
            history: config.history,
            state,
            waker: Arc::new(Waker {
                addr: wake_addr(local_addr),
                listener: Mutex::new(Some(fallback)),
            }),
        })
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
            max_connections,
            history,
            state,
            waker,
        } = self;
        // Stopped (and joined) when `run` returns, however it returns.
        let _pruner = Pruner::start(&state.store, history);
        let _cleaner = Cleaner::start(&state.uploads);
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
        info!(
            "serving {} on {local_addr} (at most {max_connections} connections, {} s timeout)",
            state.root.display(),
            state.timeout.as_secs()
        );
        let mut workers: Vec<(u64, JoinHandle<()>)> = Vec::new();
        let mut refusers = Refusers::default();
        let mut next_id = 1u64;
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
            reap(&mut workers);
            let active = state.registry.len();
            if active >= max_connections {
                refusers.refuse(stream, peer, active, max_connections);
                continue;
            }
            let id = next_id;
            next_id += 1;
            if let Some(handle) = spawn_worker(&state, id, stream, peer) {
                workers.push((id, handle));
            }
        }
        drop(listener);
        if let Ok(mut l) = waker.listener.lock() {
            *l = None;
        }
        close_all(&state, workers, refusers);
        Ok(())
    }
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
}

impl Waker {
    fn wake(&self) {
        let mut targets = vec![self.addr];
        if self.addr.is_ipv6() {
            // A dual-stack socket also answers on IPv4, should IPv6 loopback be unavailable.
            targets.push(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                self.addr.port(),
            ));
        }
        for t in targets {
            if TcpStream::connect_timeout(&t, Duration::from_secs(1)).is_ok() {
                return;
            }
        }
        if let Ok(guard) = self.listener.lock() {
            if let Some(sock) = guard.as_ref() {
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

/// Registers the connection and starts its `client-<id>` thread.
fn spawn_worker(
    state: &Arc<ServerState>,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<JoinHandle<()>> {
    let clone = match stream.try_clone() {
        Ok(c) => c,
        Err(e) => {
            warn!("dropping connection from {peer}: {e}");
            return None;
        }
    };
    let guard = state.registry.register(id, peer, clone);
    let st = Arc::clone(state);
    // If the thread cannot start, the closure (and with it the guard) is dropped, which
    // unregisters the connection.
    thread::Builder::new()
        .name(format!("client-{id}"))
        .spawn(move || connection::handle(stream, peer, guard, &st))
        .map_err(|e| error!("cannot start a thread for {peer}: {e}"))
        .ok()
}

/// Joins the workers that have finished, so the list only holds live ones.
fn reap(workers: &mut Vec<(u64, JoinHandle<()>)>) {
    let (done, live): (Vec<_>, Vec<_>) = workers.drain(..).partition(|(_, h)| h.is_finished());
    *workers = live;
    for (id, h) in done {
        if h.join().is_err() {
            error!("worker client-{id} panicked");
        }
    }
}

/// The shutdown sequence described in the module documentation.
fn close_all(state: &ServerState, workers: Vec<(u64, JoinHandle<()>)>, mut refusers: Refusers) {
    let open = state.registry.shutdown_all(Shutdown::Read);
    info!("shutting down: closing {open} active connection(s)");
    let grace_end = Instant::now() + GRACE;
    while !state.registry.is_empty() && Instant::now() < grace_end {
        thread::sleep(Duration::from_millis(10));
    }
    state.registry.shutdown_all(Shutdown::Both);
    let deadline = Instant::now() + JOIN_LIMIT;
    refusers.shutdown(deadline);
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
