//! The progress bar on standard error, and human-readable sizes, rates and the summary line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

const TEMPLATE: &str =
    "{bytes:>10} / {total_bytes:<10} [{wide_bar}] {binary_bytes_per_sec:>12}  ETA {eta}";

/// A progress bar, or nothing when stderr is not a terminal or `--quiet` was given.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` bytes, drawn on stderr only when `show` and stderr is a terminal.
    pub fn new(total: u64, show: bool) -> Progress {
        if !show || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar }
    }

    /// A bar that draws nothing.
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// Sets the total once it is known (the server's file header).
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Sets how many bytes are done (what a resumed transfer already had).
    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Bytes done so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Records `n` more bytes.
    pub fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Leave a clean line for the error or summary that follows.
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

/// A byte count as `64.0 MiB` (binary units, one decimal; plain bytes below 1 KiB).
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A transfer rate as `152.3 MiB/s`.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!("{}/s", Bytes((bytes as f64 / secs) as u64))
}

/// The line printed after a successful download:
/// `received 'file.bin' (64.0 MiB) in 0.42 s, 152.3 MiB/s, sha256 verified`.
pub fn summary(name: &str, bytes: u64, elapsed: Duration, algorithm: &str) -> String {
    format!(
        "received '{name}' ({}) in {:.2} s, {}, {algorithm} verified",
        Bytes(bytes),
        elapsed.as_secs_f64(),
        rate(bytes, elapsed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(64 << 20).to_string(), "64.0 MiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary("file.bin", 64 << 20, Duration::from_millis(500), "sha256"),
            "received 'file.bin' (64.0 MiB) in 0.50 s, 128.0 MiB/s, sha256 verified"
        );
        // A zero duration does not divide by zero.
        assert!(summary("e", 0, Duration::ZERO, "md5").contains("0 B/s"));
    }

    #[test]
    fn hidden_bar_accepts_updates() {
        let p = Progress::new(10, false);
        p.advance(5);
        p.finish();
    }
}
