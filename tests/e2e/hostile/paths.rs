//! The path escape table through every request that names a path, in both protocols.

use super::fixture::*;
use super::wire::*;
use sfts_protocol::{Algorithm, Capabilities, Digest, ErrorCode, Message, PutBegin, MAX_PATH_LEN};

#[test]
fn path_escapes_are_refused_for_every_request_type() {
    let t = Target::start(&["--max-connections", "1000"]);
    let addr = t.addr();
    let outside = t.outside.to_string_lossy().into_owned();
    let absolute = format!("{outside}/secret.txt");
    let paths: Vec<String> = [
        "../secret.txt",
        "sub/../../secret.txt",
        "./../secret.txt",
        "sub/./../../secret.txt",
        "..",
        "../",
        "../share/good.bin",
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "..%2fsecret.txt",
        "%252e%252e/secret.txt",
        "..%c0%afsecret.txt",
        "/etc/passwd",
        absolute.as_str(),
        "//secret.txt",
        "ok.txt\0../secret.txt",
        "\0",
        "..\0",
        "link",
        "dirlink",
        "dirlink/secret.txt",
        "dirlink/share/good.bin",
        "dirlink/newdir",
        "link/x",
        // The server's own staging area for uploads is not part of what it serves.
        ".sfts-upload",
        ".sfts-upload/",
        "./.sfts-upload//x.part",
        "..\\secret.txt",
        "sub\\..\\..\\secret.txt",
        "\\secret.txt",
        "\\\\host\\share\\secret.txt",
        "C:/secret.txt",
        "C:\\secret.txt",
        "C:secret.txt",
        "c:",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        // At the length limit, past it, and one component far beyond NAME_MAX.
        "../".repeat(MAX_PATH_LEN / 3 - 4) + "secret.txt",
        "../".repeat(MAX_PATH_LEN / 3) + "secret.txt",
        "x".repeat(MAX_PATH_LEN),
    ])
    .collect();

    // The server's words must not reveal where the root lives.
    let no_server_path = |case: &str, path: &str, message: &str| {
        let said = message.replace(path, "<path>");
        assert!(
            !said.contains(&outside),
            "{case}: the reply reveals a server path: {message}"
        );
    };

    // Get and Stat, each on its own session.
    let stat = |p: &str| Message::Stat { path: p.into() };
    // A refusal with another code is collected and reported at the end, so one run shows
    // every misclassified path.
    let mut misclassified = Vec::new();
    for kind in ["Get", "Stat"] {
        for path in &paths {
            let case = format!("{kind} {path:?}");
            let m = if kind == "Get" { get(path) } else { stat(path) };
            let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
            let (_, rest) = after_welcome(&case, &r);
            match &rest[..] {
                [Frame::Error(code, message)] => {
                    if !matches!(
                        code,
                        ErrorCode::OutsideRoot | ErrorCode::BadRequest | ErrorCode::NotFound
                    ) {
                        let shown: String = path.chars().take(24).collect();
                        misclassified.push(format!(
                            "{kind} of {shown:?}... ({} bytes): {} ({} bytes of message)",
                            path.len(),
                            code.name(),
                            message.len()
                        ));
                    }
                    no_server_path(&case, path, message);
                }
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
        t.assert_healthy(&format!("path escapes through {kind}"));
    }

    // List, flat and recursive.
    let mut announced = None;
    for path in &paths {
        for recursive in [false, true] {
            let case = format!("List {path:?} (recursive {recursive})");
            let m = Message::List {
                path: path.clone(),
                recursive,
            };
            let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
            let (caps, rest) = after_welcome(&case, &r);
            let listing = Capabilities(caps).has(Capabilities::LIST);
            announced = Some(listing);
            match &rest[..] {
                [Frame::Error(code, message)] => {
                    if listing
                        && !matches!(
                            code,
                            ErrorCode::OutsideRoot
                                | ErrorCode::BadRequest
                                | ErrorCode::NotFound
                                | ErrorCode::NotADirectory
                        )
                    {
                        misclassified.push(format!(
                            "List of {:?} ({} bytes): {}",
                            path.chars().take(24).collect::<String>(),
                            path.len(),
                            code.name()
                        ));
                    }
                    no_server_path(&case, path, message)
                }
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
    }
    if announced == Some(false) {
        eprintln!(
            "NOTE: List: the server does not announce LIST (not implemented yet); every escape \
             was refused, but by the 'unexpected message' rule, not by path confinement"
        );
    } else {
        // The whole tree, recursively: links leading outside are listed as links and never
        // followed, and the staging area does not show.
        let m = Message::List {
            path: ".".into(),
            recursive: true,
        };
        let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
        let (_, rest) = after_welcome("List . recursive", &r);
        let names = listed(&r.bytes);
        assert!(
            matches!(rest.last(), Some(Frame::Other("ListEnd"))),
            "List . recursive: {rest:?}"
        );
        for (name, kind) in &names {
            assert!(
                !name.starts_with(".sfts-upload") && !name.contains("secret"),
                "List . recursive shows {name:?}"
            );
            if name == "link" || name == "dirlink" {
                assert_eq!(*kind, sfts_protocol::EntryKind::Symlink, "{name}");
            }
        }
        assert!(names.iter().any(|(n, _)| n == "good.bin"), "{names:?}");
    }
    t.assert_healthy("path escapes through List");

    // Uploads: PutBegin and Mkdir. Nothing may be created anywhere (checked by assert_healthy).
    // Percent-encoded names are literal names inside the root, which an upload may create:
    // they are escapes only for a server that would decode them, and Get and Stat showed above
    // that this one does not.
    let mut announced = None;
    for path in paths.iter().filter(|p| !p.contains('%')) {
        let begin = PutBegin::new(
            1,
            path.clone(),
            3,
            0,
            4096,
            &[Digest::new(Algorithm::Sha256, vec![0xaa; 32]).unwrap()],
        )
        .unwrap();
        for m in [
            Message::PutBegin(begin),
            Message::Mkdir { path: path.clone() },
        ] {
            let case = format!("{} {path:?}", m.name());
            let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
            let (caps, rest) = after_welcome(&case, &r);
            announced = Some(Capabilities(caps).has(Capabilities::UPLOAD));
            match &rest[..] {
                [Frame::Error(_, message)] => no_server_path(&case, path, message),
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
    }
    if announced == Some(false) {
        eprintln!(
            "NOTE: PutBegin/Mkdir: the server does not announce UPLOAD (not implemented yet); \
             every escape was refused, but not by the upload path rules"
        );
    }
    t.assert_healthy("path escapes through PutBegin and Mkdir");

    // The original protocol, same table.
    for path in &paths {
        let mut req = Vec::new();
        sfts_protocol::legacy::encode_request(path, &mut req);
        let r = exchange(addr, &req, true, QUICK);
        let case = format!("legacy request {path:?}");
        assert_legacy_refused(&case, &r);
        no_server_path(&case, path, &String::from_utf8_lossy(&r.bytes));
    }
    t.assert_healthy("path escapes through the original protocol");

    // A client's bad name is its own error (outside-root, bad-request or not-found), never
    // the server's `internal` failure.
    assert!(
        misclassified.is_empty(),
        "refused with the wrong code:\n{}",
        misclassified.join("\n")
    );

    // Controls: links that stay inside are served; a `..` that would come back is not.
    let r = exchange(addr, &session_bytes(&[get("inner")]), true, QUICK);
    let (_, rest) = after_welcome("Get inner", &r);
    assert_eq!(assert_served("Get inner", &rest).1, b"fine");
    let r = exchange(addr, &session_bytes(&[get("sub/../ok.txt")]), true, QUICK);
    let (_, rest) = after_welcome("Get sub/../ok.txt", &r);
    assert!(
        matches!(&rest[..], [Frame::Error(ErrorCode::OutsideRoot, _)]),
        "{rest:?}"
    );
}
