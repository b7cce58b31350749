//! Writing log lines on a background thread, a burst of them at a time.
//!
//! The logging thread only queues each line. The writer thread sleeps until a line comes,
//! then lets the lines that follow gather for [`GATHER`] and writes them all at once. A
//! server sending a tree of 10,000 small files logs 10,000 lines in half a second: woken for
//! each line (as `tracing-appender`'s worker is, which also spins and yields before it sleeps
//! again), the two writer threads cost 18,000 `write`s, 23,000 `futex` and 64,000
//! `sched_yield` calls, 15 % of the server's CPU, on a machine where the client needs that
//! CPU; gathered, a few dozen of each.
//!
//! A line therefore reaches its file (or the console) up to [`GATHER`] late, later only if
//! the output itself is slower than the lines come. Dropping the [`BackgroundGuard`] writes
//! everything queued before it and waits for that, at most [`FLUSH_WAIT`] (each writer's
//! guard on its own). A process that ends without dropping it (`std::process::exit`, such
//! as the client's second Ctrl-C) loses the lines of the last [`GATHER`].

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long lines gather after the first of a burst.
pub const GATHER: Duration = Duration::from_millis(50);
/// How long dropping the guard waits for the queued lines to be written.
pub const FLUSH_WAIT: Duration = Duration::from_secs(1);
/// Queue length when none is asked for; lines beyond it are dropped.
pub const DEFAULT_LINES: usize = 128_000;
/// Bytes gathered before a `write`, within a burst.
const BATCH_BYTES: usize = 64 * 1024;

enum Msg {
    Line(Vec<u8>),
    /// Write everything before this, then stop.
    Stop,
}

/// The logging side: hands lines to the writer thread.
pub struct Background {
    tx: SyncSender<Msg>,
    writer: Thread,
    /// A full queue drops the line (the logging thread never waits) instead of waiting.
    lossy: bool,
}

impl Write for &Background {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tx.try_send(Msg::Line(buf.to_vec())) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(line)) => {
                // Gathering can wait: the queue cannot.
                self.writer.unpark();
                if !self.lossy {
                    let _ = self.tx.send(line);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Background {
    type Writer = &'a Background;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Keeps the writer thread; dropping it writes what is queued.
pub struct BackgroundGuard {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut stop = Msg::Stop;
        loop {
            match self.tx.try_send(stop) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    thread.thread().unpark();
                    std::thread::sleep(Duration::from_millis(1));
                    stop = again;
                }
                // A console nobody reads: give up on it.
                Err(TrySendError::Full(_)) => return,
            }
        }
        thread.thread().unpark();
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// Starts a writer thread for `out` with a queue of `lines` (default [`DEFAULT_LINES`],
/// lossy; a length given makes the logging thread wait for room instead).
pub fn background<W: Write + Send + 'static>(
    out: W,
    lines: Option<usize>,
) -> io::Result<(Background, BackgroundGuard)> {
    let (tx, rx) = sync_channel(lines.unwrap_or(DEFAULT_LINES).max(1));
    let out = BufWriter::with_capacity(BATCH_BYTES, out);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(rx, out))?;
    let writer = Background {
        tx: tx.clone(),
        writer: thread.thread().clone(),
        lossy: lines.is_none(),
    };
    let guard = BackgroundGuard {
        tx,
        thread: Some(thread),
    };
    Ok((writer, guard))
}

/// Writes a line; false for the end.
fn take<W: Write>(msg: Msg, out: &mut BufWriter<W>) -> bool {
    match msg {
        Msg::Line(line) => {
            let _ = out.write_all(&line);
            true
        }
        Msg::Stop => false,
    }
}

fn run<W: Write>(rx: Receiver<Msg>, mut out: BufWriter<W>) {
    // Asleep until a line comes: one wake-up for it.
    while let Ok(first) = rx.recv() {
        let mut going = take(first, &mut out);
        if going {
            // The rest of the burst gathers meanwhile, and goes out with it.
            std::thread::park_timeout(GATHER);
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        if !take(msg, &mut out) {
                            going = false;
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        going = false;
                        break;
                    }
                }
            }
        }
        let _ = out.flush();
        if !going {
            break;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records every `write` it gets.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Calls {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[test]
    fn a_burst_goes_out_in_few_writes_and_the_guard_flushes_it() {
        let calls = Calls::default();
        let (writer, guard) = background(calls.clone(), None).unwrap();
        for i in 0..1_000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let want: String = (0..1_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(calls.text(), want);
        // 1,000 lines of 8,890 bytes: one write, or a few if this thread was held up for
        // longer than GATHER between lines; never one a line.
        assert!(calls.writes() < 100, "{} writes", calls.writes());
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_the_guard() {
        let calls = Calls::default();
        let (writer, _guard) = background(calls.clone(), None).unwrap();
        (&writer).write_all(b"hello\n").unwrap();
        // Bounded: the line is due after GATHER; allow a loaded machine 100 times that.
        let deadline = Instant::now() + GATHER * 100;
        while calls.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(calls.text(), "hello\n");
    }

    #[test]
    fn a_small_queue_waits_for_room_and_loses_nothing() {
        let calls = Calls::default();
        let (writer, guard) = background(calls.clone(), Some(2)).unwrap();
        let started = Instant::now();
        for i in 0..500 {
            (&writer).write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        // A full queue wakes the writer: 250 naps of GATHER would take 12 s.
        assert!(started.elapsed() < GATHER * 100, "{:?}", started.elapsed());
        drop(guard);
        let want: String = (0..500).map(|i| format!("{i}\n")).collect();
        assert_eq!(calls.text(), want);
    }

    #[test]
    fn lines_after_the_guard_are_dropped_quietly() {
        let calls = Calls::default();
        let (writer, guard) = background(calls.clone(), None).unwrap();
        (&writer).write_all(b"kept\n").unwrap();
        drop(guard);
        (&writer).write_all(b"late\n").unwrap();
        assert_eq!(calls.text(), "kept\n");
    }
}
