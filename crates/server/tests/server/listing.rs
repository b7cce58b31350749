//! `List` and `Mkdir` through the native protocol: flat and recursive listings in name order,
//! symlinks followed inside the root only, the staging directory hidden, the entry limit,
//! listings split over frames, refusals; directories created with their parents.

use crate::support::{begin, data, Native, Running, ALL_CAPS};
use sfts_protocol::{Capabilities, EntryKind, ErrorCode, FileKind, ListEntry};
use std::os::unix::fs::symlink;

fn kinds(entries: &[ListEntry]) -> Vec<(&str, EntryKind, u64)> {
    entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.size))
        .collect()
}

#[test]
fn flat_and_recursive_listings_with_symlinks_and_the_staging_directory_hidden() {
    let server = Running::uploads();
    let r = &server.root;
    std::fs::create_dir_all(r.join("t/sub/deeper")).unwrap();
    std::fs::create_dir_all(r.join("t/empty")).unwrap();
    std::fs::write(r.join("t/b.txt"), b"bb").unwrap();
    std::fs::write(r.join("t/A.txt"), b"a").unwrap();
    std::fs::write(r.join("t/sub/c.txt"), b"ccc").unwrap();
    let outside = r.parent().unwrap().join("secret");
    std::fs::write(&outside, b"s").unwrap();
    symlink(&outside, r.join("t/leak")).unwrap();
    symlink("nowhere", r.join("t/dangling")).unwrap();
    symlink(r.join("t/sub"), r.join("t/alias")).unwrap();
    symlink(r.join("t"), r.join("t/sub/loop")).unwrap();
    // An unfinished upload puts a file in the staging directory.
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let bytes = data(9000, 1);
    c.begin(&begin(1, "t/partial.bin", &bytes, 4096)).unwrap();
    c.chunk(1, 0, &bytes, 4096);

    let (flat, truncated) = c.list(".", false).unwrap();
    assert!(!truncated);
    assert_eq!(kinds(&flat), [("t", EntryKind::Directory, 0)]);

    use EntryKind::*;
    let (deep, _) = c.list("t", true).unwrap();
    assert_eq!(
        kinds(&deep),
        [
            ("A.txt", File, 1),
            ("alias", Directory, 0),
            ("alias/c.txt", File, 3),
            ("alias/deeper", Directory, 0),
            ("alias/loop", Symlink, 0),
            ("b.txt", File, 2),
            ("dangling", Symlink, 0),
            ("empty", Directory, 0),
            ("leak", Symlink, 0),
            ("sub", Directory, 0),
            ("sub/c.txt", File, 3),
            ("sub/deeper", Directory, 0),
            ("sub/loop", Symlink, 0),
        ]
    );
    let mtime = std::fs::metadata(r.join("t/b.txt"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(deep[5].mtime_ns, mtime);
    // The whole root: the staging directory is not there, at any depth of the listing.
    let (all, _) = c.list(".", true).unwrap();
    assert!(
        all.iter().all(|e| !e.name.contains(".sfts-upload")),
        "{all:?}"
    );
    assert_eq!(
        c.list(".sfts-upload", false).unwrap_err().0,
        ErrorCode::NotFound
    );
}

#[test]
fn refusals_limits_and_long_listings() {
    let server = Running::start_with(|c| c.max_list_entries = 2500);
    let r = &server.root;
    std::fs::create_dir(r.join("many")).unwrap();
    // Long names, so the listing needs several 64 KiB frames.
    for i in 0..3000 {
        std::fs::write(r.join(format!("many/{i:04}-{}", "n".repeat(100))), b"").unwrap();
    }
    std::fs::write(r.join("file"), b"x").unwrap();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let (entries, truncated) = c.list("many", false).unwrap();
    assert!(truncated);
    assert_eq!(entries.len(), 2500);
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name));

    let cases: &[(&str, ErrorCode, &str)] = &[
        ("nope", ErrorCode::NotFound, "directory 'nope' not found"),
        (
            "file",
            ErrorCode::NotADirectory,
            "'file' is not a directory",
        ),
        ("../x", ErrorCode::OutsideRoot, "'..'"),
    ];
    for (path, code, text) in cases {
        let (got, message) = c.list(path, true).unwrap_err();
        assert_eq!(got, *code, "{path}");
        assert!(message.contains(text), "{path}: {message}");
    }
    let mut old = Native::connect(server.addr, Capabilities::GET);
    assert_eq!(old.list(".", false).unwrap_err().0, ErrorCode::Unsupported);
}

#[test]
fn mkdir_creates_parents_and_accepts_what_exists() {
    let server = Running::uploads();
    std::fs::write(server.root.join("file"), b"x").unwrap();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let info = c.mkdir("a/b/c").unwrap();
    assert_eq!(info.kind, FileKind::Directory);
    assert!(server.root.join("a/b/c").is_dir());
    assert!(c.mkdir("a/b").is_ok(), "existing directories are fine");
    assert!(c.mkdir(".").is_ok());
    let (code, message) = c.mkdir("file/sub").unwrap_err();
    assert_eq!(code, ErrorCode::NotADirectory);
    assert_eq!(message, "'file' is a file, not a directory");
    assert_eq!(c.mkdir("file").unwrap_err().0, ErrorCode::NotADirectory);
    assert_eq!(c.mkdir("x/LPT1").unwrap_err().0, ErrorCode::UnsafeName);
    assert_eq!(c.mkdir("../up").unwrap_err().0, ErrorCode::OutsideRoot);
    assert!(!server.root.join("x").exists());
    let (entries, _) = c.list("a", true).unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["b", "b/c"]);
}
