//! A log file with a small queue ([`sfts_logging::SMALL_QUEUE`] or less) keeps every line: the
//! logging thread waits for the writer instead of dropping lines. (Its own test binary: the
//! logger is global to the process.)

use sfts_logging::{init, LogConfig};
use tracing::level_filters::LevelFilter;

#[test]
fn a_burst_larger_than_the_queue_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let guard = init(&LogConfig {
        dir: Some(dir.path().to_path_buf()),
        prefix: "client",
        file_level: LevelFilter::INFO,
        console_level: LevelFilter::OFF,
        buffered_lines: Some(4),
        console_in_background: false,
    })
    .unwrap();
    let path = guard.path().unwrap().to_path_buf();
    for i in 0..2_000 {
        tracing::info!("line {i}");
    }
    drop(guard);
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2_000);
    assert!(lines[1_999].ends_with("line 1999"), "{}", lines[1_999]);
}
