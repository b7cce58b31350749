//! A TCP proxy for the tests, on 127.0.0.1, that misbehaves on purpose: it can throttle, cut
//! connections after some bytes, stall them (stop forwarding but keep them open), or flip one
//! byte going to the client. Every thread it starts ends when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the proxy treats the server → client direction.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Bytes per second (0 = unlimited).
    pub rate: u64,
    /// Close each of the first `cut_connections` connections after this many bytes.
    pub cut_after: Option<u64>,
    pub cut_connections: usize,
    /// Stop forwarding (but keep the connection open) on the first connection after this many
    /// bytes.
    pub stall_after: Option<u64>,
    /// Flip one byte at this offset of the first connection's server → client stream.
    pub flip_at: Option<u64>,
    /// Flip one byte at this offset of the first connection's client → server stream.
    pub flip_upstream_at: Option<u64>,
    /// Bytes per second client → server (0 = unlimited).
    pub up_rate: u64,
    /// Capability bits cleared from the server's `Welcome` on every connection, so the client
    /// sees an older server (the server itself still has them).
    pub hide_caps: u64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    pub bytes_down: Arc<AtomicU64>,
    pub bytes_up: Arc<AtomicU64>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, behaviour: Behaviour) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes_down = Arc::new(AtomicU64::new(0));
        let bytes_up = Arc::new(AtomicU64::new(0));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, connections, bytes_down, bytes_up, streams) = (
                stop.clone(),
                connections.clone(),
                bytes_down.clone(),
                bytes_up.clone(),
                streams.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let n = connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    {
                        let mut all = streams.lock().unwrap();
                        all.push(client.try_clone().unwrap());
                        all.push(server.try_clone().unwrap());
                    }
                    let b = behaviour.clone();
                    let up_flip = if n == 0 { b.flip_upstream_at } else { None };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (stop_up, up_counter) = (stop.clone(), bytes_up.clone());
                    let up_rate = b.up_rate;
                    std::thread::spawn(move || {
                        pump(
                            c2,
                            s2,
                            up_rate,
                            None,
                            None,
                            up_flip,
                            0,
                            stop_up,
                            Some(up_counter),
                        )
                    });
                    let cut = if n < b.cut_connections {
                        b.cut_after
                    } else {
                        None
                    };
                    let stall = if n == 0 { b.stall_after } else { None };
                    let flip = if n == 0 { b.flip_at } else { None };
                    let (stop2, counter) = (stop.clone(), bytes_down.clone());
                    std::thread::spawn(move || {
                        pump(
                            server,
                            client,
                            b.rate,
                            cut,
                            stall,
                            flip,
                            b.hide_caps,
                            stop2,
                            Some(counter),
                        )
                    });
                }
            })
        };
        Proxy {
            addr,
            stop,
            connections,
            bytes_down,
            bytes_up,
            streams,
            accept: Some(accept),
        }
    }
}

/// Copies `from` → `to` with the given misbehaviour, until either side closes.
#[allow(clippy::too_many_arguments)]
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    rate: u64,
    cut_after: Option<u64>,
    stall_after: Option<u64>,
    flip_at: Option<u64>,
    hide_caps: u64,
    stop: Arc<AtomicBool>,
    counter: Option<Arc<AtomicU64>>,
) {
    // The server's first frame is its Welcome: length (4), tag (1), version (2), then the
    // capabilities, a big-endian u64 at stream offsets 7..15.
    const CAPS: std::ops::Range<u64> = 7..15;
    let hidden = hide_caps.to_be_bytes();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let start = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut want = buf.len();
        if let Some(limit) = cut_after.or(stall_after) {
            if sent >= limit {
                break;
            }
            want = want.min((limit - sent) as usize);
        }
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at {
            if at >= sent && at < sent + n as u64 {
                buf[(at - sent) as usize] ^= 0x01;
            }
        }
        for at in CAPS
            .clone()
            .filter(|at| (sent..sent + n as u64).contains(at))
        {
            buf[(at - sent) as usize] &= !hidden[(at - CAPS.start) as usize];
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(c) = &counter {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    if stall_after.is_some() && cut_after.is_none() {
        // Keep both ends open and silent until the proxy is dropped or the client gives up.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
