//! The registry of active connections: who is connected, what they are being sent, how far along.
//!
//! One `Mutex<HashMap>` shared by the accept loop (which registers), the workers (which update
//! and, through [`ConnectionGuard`]'s `Drop`, unregister) and the shutdown sequence (which
//! closes every registered stream). The lock is held only to copy or swap a few fields, never
//! across I/O; the byte counter is an atomic so the transfer loop never locks at all.
//!
//! The registry also counts connections per client address ([`AddrKey`]), and
//! [`Registry::admit`] checks both connection limits and registers under one lock, so two
//! accept loops (the main port and `--plain-port`) can never admit one connection too many.

use crate::limits::AddrKey;
use crate::refuse::Reason;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One active connection.
struct Entry {
    peer: SocketAddr,
    key: AddrKey,
    file: Option<String>,
    file_size: u64,
    bytes_sent: Arc<AtomicU64>,
    started: Instant,
    /// A `try_clone` of the worker's stream, so shutdown can unblock a worker stuck in I/O.
    stream: Arc<TcpStream>,
}

/// A snapshot of one connection, for logs and status displays.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Connection number (the `n` of the `client-n` thread).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The file being sent, if a transfer is under way.
    pub file: Option<String>,
    /// Size of that file.
    pub file_size: u64,
    /// Bytes of that file sent so far.
    pub bytes_sent: u64,
    /// How long the connection has been open.
    pub elapsed: Duration,
}

/// The registry of active connections.
#[derive(Default)]
pub struct Registry {
    table: Mutex<Table>,
}

/// The connections, and how many each address has.
#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    per_address: HashMap<AddrKey, usize>,
}

/// The connection limits [`Registry::admit`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections in all.
    pub total: usize,
    /// Most connections from one address.
    pub per_address: usize,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The map, even if a thread panicked while holding the lock: every update is a single
    /// field assignment, so the data cannot be left half-written.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of active connections.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Number of active connections from `key`.
    pub fn count(&self, key: AddrKey) -> usize {
        self.lock().per_address.get(&key).copied().unwrap_or(0)
    }

    /// True when no connection is active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers connection `id`; it stays registered until the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> ConnectionGuard {
        let unlimited = Limits {
            total: usize::MAX,
            per_address: usize::MAX,
        };
        match self.admit(id, peer, stream, unlimited) {
            Ok(guard) => guard,
            Err(_) => unreachable!("no limit"),
        }
    }

    /// Registers connection `id` if neither limit is reached, or says which one is.
    pub fn admit(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        stream: TcpStream,
        limits: Limits,
    ) -> Result<ConnectionGuard, Reason> {
        let key = AddrKey::of(peer.ip());
        let mut table = self.lock();
        let active = table.entries.len();
        if active >= limits.total {
            return Err(Reason::Full {
                active,
                limit: limits.total,
            });
        }
        let mine = table.per_address.entry(key).or_default();
        if *mine >= limits.per_address {
            return Err(Reason::Address {
                limit: limits.per_address,
            });
        }
        *mine += 1;
        let bytes_sent = Arc::new(AtomicU64::new(0));
        let entry = Entry {
            peer,
            key,
            file: None,
            file_size: 0,
            bytes_sent: Arc::clone(&bytes_sent),
            started: Instant::now(),
            stream: Arc::new(stream),
        };
        table.entries.insert(id, entry);
        drop(table);
        Ok(ConnectionGuard {
            registry: Arc::clone(self),
            id,
            bytes_sent,
        })
    }

    /// A snapshot of every active connection, ordered by id.
    pub fn snapshot(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .lock()
            .entries
            .iter()
            .map(|(id, e)| ConnectionInfo {
                id: *id,
                peer: e.peer,
                file: e.file.clone(),
                file_size: e.file_size,
                bytes_sent: e.bytes_sent.load(Ordering::Relaxed),
                elapsed: e.started.elapsed(),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Shuts down (`how`) every registered stream. The streams are collected under the lock
    /// and shut down after it is released. Returns how many there were.
    pub fn shutdown_all(&self, how: Shutdown) -> usize {
        let streams: Vec<Arc<TcpStream>> = self
            .lock()
            .entries
            .values()
            .map(|e| Arc::clone(&e.stream))
            .collect();
        for s in &streams {
            // NotConnected: the peer is already gone, which is what we want anyway.
            let _ = s.shutdown(how);
        }
        streams.len()
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            f(e);
        }
    }
}

/// Keeps one connection registered; dropping it (when the worker ends, however it ends)
/// removes the entry.
pub struct ConnectionGuard {
    registry: Arc<Registry>,
    id: u64,
    bytes_sent: Arc<AtomicU64>,
}

impl ConnectionGuard {
    /// The connection's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records that `file` (`size` bytes) starts being sent; resets the byte counter.
    pub fn begin_file(&self, file: &str, size: u64) {
        self.bytes_sent.store(0, Ordering::Relaxed);
        let file = file.to_owned();
        self.registry.update(self.id, |e| {
            e.file = Some(file);
            e.file_size = size;
        });
    }

    /// Records that no file is being sent any more.
    pub fn end_file(&self) {
        self.registry.update(self.id, |e| e.file = None);
    }

    /// The counter the transfer loop adds sent bytes to, without locking.
    pub fn bytes_sent(&self) -> &AtomicU64 {
        &self.bytes_sent
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut table = self.registry.lock();
        if let Some(e) = table.entries.remove(&self.id) {
            if let Some(n) = table.per_address.get_mut(&e.key) {
                *n -= 1;
                if *n == 0 {
                    table.per_address.remove(&e.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tcp_pair as pair;
    use std::io::Read;

    #[test]
    fn register_update_snapshot_and_drop() {
        let reg = Arc::new(Registry::new());
        let (_c1, s1) = pair();
        let (_c2, s2) = pair();
        let peer = s1.peer_addr().unwrap();
        let g1 = reg.register(1, peer, s1);
        let g2 = reg.register(2, peer, s2);
        assert_eq!(reg.len(), 2);

        g2.begin_file("a.bin", 100);
        g2.bytes_sent().fetch_add(40, Ordering::Relaxed);
        let snap = reg.snapshot();
        assert_eq!(snap.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(snap[1].file.as_deref(), Some("a.bin"));
        assert_eq!((snap[1].bytes_sent, snap[1].file_size), (40, 100));
        assert_eq!(snap[0].file, None);

        g2.end_file();
        assert_eq!(reg.snapshot()[1].file, None);
        drop(g1);
        assert_eq!(reg.len(), 1);
        drop(g2);
        assert!(reg.is_empty());
    }

    #[test]
    fn admit_enforces_both_limits() {
        let reg = Arc::new(Registry::new());
        let limits = Limits {
            total: 3,
            per_address: 2,
        };
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:1".parse().unwrap();
        let mut held = Vec::new();
        for id in 0..2 {
            let (_c, s) = pair();
            held.push(reg.admit(id, a, s, limits).unwrap());
        }
        let (_c, s) = pair();
        assert!(matches!(
            reg.admit(9, a, s, limits),
            Err(Reason::Address { limit: 2 })
        ));
        let (_c, s) = pair();
        held.push(reg.admit(3, b, s, limits).unwrap());
        let (_c, s) = pair();
        assert!(matches!(
            reg.admit(4, b, s, limits),
            Err(Reason::Full {
                active: 3,
                limit: 3
            })
        ));
        assert_eq!(reg.count(AddrKey::of(a.ip())), 2);
        held.remove(0);
        assert_eq!(reg.count(AddrKey::of(a.ip())), 1);
        let (_c, s) = pair();
        held.push(reg.admit(5, a, s, limits).unwrap());
        drop(held);
        assert!(reg.is_empty());
        assert_eq!(reg.count(AddrKey::of(a.ip())), 0);
    }

    #[test]
    fn shutdown_all_closes_registered_streams() {
        let reg = Arc::new(Registry::new());
        let (mut client, server) = pair();
        let peer = server.peer_addr().unwrap();
        let _g = reg.register(7, peer, server.try_clone().unwrap());
        assert_eq!(reg.shutdown_all(Shutdown::Both), 1);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "client should see EOF");
    }
}
