//! One line is formatted for both outputs, and each output still keeps only its own levels:
//! a file at WARNING does not get the INFO lines the console takes. (Its own test binary: the
//! logger is global to the process.)

use sfts_logging::{init, LogConfig};
use tracing::level_filters::LevelFilter;

#[test]
fn the_file_keeps_only_its_levels_when_the_console_takes_more() {
    let dir = tempfile::tempdir().unwrap();
    let guard = init(&LogConfig {
        dir: Some(dir.path().to_path_buf()),
        prefix: "server",
        file_level: LevelFilter::WARN,
        console_level: LevelFilter::INFO,
        buffered_lines: None,
        console_in_background: true,
    })
    .unwrap();
    let path = guard.path().unwrap().to_path_buf();
    for i in 0..300 {
        tracing::info!("console only {i}");
        tracing::warn!("both {i}");
        tracing::debug!("neither {i}");
    }
    drop(guard);
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 300, "{text}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.ends_with(&format!(" - WARNING - both {i}")),
            "line {i}: {line}"
        );
    }
}
