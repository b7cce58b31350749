//! What is printed at the end of a download: the human summary line on stderr, and with
//! `--json` one machine-readable object (the outcome or the error) on standard output (on
//! standard error when the data itself went to standard output).

use crate::cli::GetOptions;
use crate::download::Outcome;
use crate::error::ClientError;
use crate::progress::{self, Bytes};
use serde_json::{json, Value};
use std::io::Write;

/// The human summary: the received line, plus what a resume or reconnection saved.
pub fn human(opts: &GetOptions, outcome: &Outcome) -> String {
    let s = &outcome.stats;
    let mut line = progress::summary(
        &opts.remote,
        outcome.size,
        outcome.elapsed,
        opts.algorithm.name(),
    );
    if s.reused > 0 || s.retries > 0 || s.repaired > 0 {
        let how = match s.sealed {
            0 => String::new(),
            n if n == s.reused => " (sealed, not read back)".into(),
            n => format!(" ({} of it sealed, not read back)", Bytes(n)),
        };
        line.push_str(&format!(
            "\n  {} reused from the partial download{how}, {} fetched, {} reconnection(s), \
             {} chunk(s) repaired",
            Bytes(s.reused),
            Bytes(s.fetched),
            s.retries,
            s.repaired
        ));
    }
    line
}

/// The `--json` object of a successful download.
pub fn outcome_json(opts: &GetOptions, outcome: &Outcome) -> Value {
    let s = &outcome.stats;
    let seconds = outcome.elapsed.as_secs_f64();
    json!({
        "status": "ok",
        "path": opts.remote,
        "output": outcome.output,
        "size": outcome.size,
        "digests": { opts.algorithm.name(): outcome.digest.to_hex() },
        "bytes_fetched": s.fetched,
        "bytes_reused": s.reused,
        "bytes_reused_sealed": s.sealed,
        "retries": s.retries,
        "chunks_repaired": s.repaired,
        "seconds": round3(seconds),
        "rate_bytes_per_second": (s.fetched as f64 / seconds.max(1e-6)).round() as u64,
    })
}

/// The `--json` object of a failed download.
pub fn error_json(opts: &GetOptions, e: &ClientError) -> Value {
    json!({
        "status": "error",
        "path": opts.remote,
        "exit_code": e.exit_code(),
        "error": e.to_string(),
    })
}

/// Prints `value` on one line where the digest line would go.
pub fn print_json(opts: &GetOptions, value: &Value) {
    let text = value.to_string();
    if matches!(opts.output, crate::output::OutputSpec::Stdout) {
        eprintln!("{text}");
    } else {
        let _ = writeln!(std::io::stdout(), "{text}");
    }
}

/// The `--json` object of a finished upload.
pub fn put_json(o: &crate::upload::PutOutcome) -> Value {
    let seconds = o.elapsed.as_secs_f64();
    json!({
        "status": "ok",
        "path": o.remote,
        "size": o.size,
        "digests": match &o.md5 {
            Some(md5) => json!({ "sha256": o.sha256.to_hex(), "md5": md5.to_hex() }),
            None => json!({ "sha256": o.sha256.to_hex() }),
        },
        "bytes_sent": o.sent,
        "bytes_skipped": o.skipped,
        "retries": o.retries,
        "chunks_resent": o.resent,
        "seconds": round3(seconds),
        "rate_bytes_per_second": (o.sent as f64 / seconds.max(1e-6)).round() as u64,
    })
}

/// The human summary of an upload.
pub fn put_human(o: &crate::upload::PutOutcome) -> String {
    let mut line = format!(
        "sent '{}' ({}) in {:.2} s, {}, sha256 verified by the server",
        o.remote,
        Bytes(o.size),
        o.elapsed.as_secs_f64(),
        progress::rate(o.sent, o.elapsed)
    );
    if o.skipped > 0 || o.retries > 0 || o.resent > 0 {
        line.push_str(&format!(
            "\n  {} already on the server, {} sent, {} reconnection(s), {} chunk(s) sent again",
            Bytes(o.skipped),
            Bytes(o.sent),
            o.retries,
            o.resent
        ));
    }
    line
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::fetch::Stats;
    use clap::Parser;
    use sfts_protocol::{Algorithm, Digest};
    use std::time::Duration;

    fn opts() -> GetOptions {
        let cli = Cli::try_parse_from(["sfts-client", "get", "h:1", "a/b.bin", "--json"]).unwrap();
        let Command::Get(args) = cli.command else {
            unreachable!("parsed a get command")
        };
        GetOptions::from_args(args, &cli.global).unwrap()
    }

    /// 100 bytes in 1.5 s with these counters.
    fn outcome(stats: Stats) -> Outcome {
        Outcome {
            digest: Digest::from_hex(Algorithm::Sha256, &"ab".repeat(32)).unwrap(),
            output: "b.bin".into(),
            size: 100,
            elapsed: Duration::from_millis(1500),
            stats,
        }
    }

    #[test]
    fn json_summary_has_every_field() {
        let outcome = outcome(Stats {
            fetched: 60,
            reused: 40,
            sealed: 0,
            retries: 2,
            repaired: 1,
        });
        let v = outcome_json(&opts(), &outcome);
        assert_eq!(v["path"], "a/b.bin");
        assert_eq!(v["size"], 100);
        assert_eq!(v["digests"]["sha256"], "ab".repeat(32));
        assert_eq!(v["bytes_fetched"], 60);
        assert_eq!(v["bytes_reused"], 40);
        assert_eq!(v["bytes_reused_sealed"], 0);
        assert_eq!(v["retries"], 2);
        assert_eq!(v["chunks_repaired"], 1);
        assert_eq!(v["seconds"], 1.5);
        assert_eq!(v["rate_bytes_per_second"], 40);
        let text = human(&opts(), &outcome);
        assert!(text.contains("40 B reused"), "{text}");
        assert!(text.contains("2 reconnection(s)"), "{text}");
        assert!(!text.contains("sealed"), "{text}");
    }

    #[test]
    fn the_summary_says_what_was_reused_without_reading_it_back() {
        let mut outcome = outcome(Stats {
            fetched: 60,
            reused: 40,
            sealed: 40,
            ..Stats::default()
        });
        assert_eq!(outcome_json(&opts(), &outcome)["bytes_reused_sealed"], 40);
        let text = human(&opts(), &outcome);
        assert!(
            text.contains("40 B reused from the partial download (sealed, not read back)"),
            "{text}"
        );
        outcome.stats.sealed = 30;
        let text = human(&opts(), &outcome);
        assert!(
            text.contains("(30 B of it sealed, not read back)"),
            "{text}"
        );
    }

    #[test]
    fn json_error() {
        let v = error_json(&opts(), &ClientError::Usage("bad".into()));
        assert_eq!(v["status"], "error");
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["error"], "bad");
    }
}
