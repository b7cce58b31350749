//! The SFTS log line format.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as `YYYY-MM-DD HH:MM:SS - ThreadName - LEVEL - Message`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SftsFormat;

/// The level names of the original design (Python's logging spells warnings `WARNING`).
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The local time of the current second as `YYYY-MM-DD HH:MM:SS`, formatted again only when
/// the second changes (a burst of lines, one per file of a tree, shares it).
struct Stamp {
    second: Option<u64>,
    text: String,
}

impl Stamp {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        if second.is_none() || second != self.second {
            let local: chrono::DateTime<chrono::Local> = now.into();
            self.text.clear();
            // Writing into a String cannot fail.
            let _ = write!(self.text, "{}", local.format("%Y-%m-%d %H:%M:%S"));
            self.second = second;
        }
        &self.text
    }
}

thread_local! {
    static STAMP: RefCell<Stamp> = const {
        RefCell::new(Stamp {
            second: None,
            text: String::new(),
        })
    };
}

impl<S, N> FormatEvent<S, N> for SftsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        STAMP.with_borrow_mut(|stamp| writer.write_str(stamp.now()))?;
        write!(
            writer,
            " - {name} - {} - ",
            level_name(event.metadata().level())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn line_format() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(SftsFormat)
            .with_writer(buf.clone())
            .finish();
        std::thread::Builder::new()
            .name("client-17".into())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || {
                    tracing::warn!("retrying in {} s", 2);
                })
            })
            .unwrap()
            .join()
            .unwrap();
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        // 2026-11-22 07:37:16 - client-17 - WARNING - retrying in 2 s
        let (stamp, rest) = line.split_at(19);
        assert_eq!(rest, " - client-17 - WARNING - retrying in 2 s\n");
        let b = stamp.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16]),
            (b'-', b'-', b' ', b':', b':')
        );
        assert!(stamp.chars().filter(char::is_ascii_digit).count() == 14);
    }

    #[test]
    fn the_stamp_is_the_local_time_of_this_second() {
        let mut stamp = Stamp {
            second: None,
            text: String::new(),
        };
        for _ in 0..3 {
            let before = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
            let got = stamp.now().to_owned();
            let after = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
            assert!(got == before || got == after, "{before} {got} {after}");
        }
        // A stamp kept from another second is formatted again.
        stamp.second = Some(0);
        stamp.text = "1970-01-01 00:00:00".into();
        let before = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let got = stamp.now().to_owned();
        let after = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        assert!(got == before || got == after, "{before} {got} {after}");
    }
}
