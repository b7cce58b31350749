//! Nothing outside the served root is ever served, whatever the path looks like.

use crate::fakes::native_get;
use crate::support::*;
use sfts_protocol::ErrorCode;

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-ROOT";

#[test]
fn every_path_escape_attempt_is_refused() {
    let server = Server::start();
    let outside = server.root.parent().unwrap().to_path_buf();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    std::fs::write(server.root.join("ok.txt"), b"fine").unwrap();
    std::fs::create_dir(server.root.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), server.root.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, server.root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(server.root.join("ok.txt"), server.root.join("inner")).unwrap();

    let absolute = outside.join("secret.txt").to_string_lossy().into_owned();
    let long = "a/".repeat(3000) + "x";
    let attempts = [
        "../secret.txt",
        "sub/../../secret.txt",
        "./../secret.txt",
        "/etc/passwd",
        absolute.as_str(),
        "link",
        "dirlink/secret.txt",
        "dirlink/share/ok.txt",
        "..\\secret.txt",
        "sub\\..\\..\\secret.txt",
        "C:/secret.txt",
        "C:\\secret.txt",
        "%2e%2e/secret.txt",
        long.as_str(),
    ];
    let work = tempfile::tempdir().unwrap();
    for path in attempts {
        let out = run(client(work.path()).args(["get", &server.target(), path, "-o", "-"]));
        assert_eq!(code(&out), 4, "{path}: {}", stderr(&out));
        assert!(
            !out.stdout.windows(SECRET.len()).any(|w| w == SECRET),
            "{path} leaked the secret"
        );
        // The client echoes the user's own path; what the server said comes after it and
        // must not reveal where the served root lives.
        let err = stderr(&out);
        let server_part = err.split_once("': ").map_or(err.as_str(), |(_, rest)| rest);
        assert!(
            !server_part.contains(&*outside.to_string_lossy()),
            "{path}: server path leaked: {err}"
        );
    }

    // A NUL byte cannot go through argv; send it with a hand-made request.
    match native_get(server.addr, "ok.txt\0../secret.txt") {
        Err((code, _)) => assert_eq!(code, ErrorCode::BadRequest),
        Ok(_) => panic!("a path with NUL was served"),
    }
    // Escapes get the same answer whether or not the target exists outside.
    let (c1, m1) = native_get(server.addr, "../secret.txt").unwrap_err();
    let (c2, m2) = native_get(server.addr, "../no-such-file").unwrap_err();
    assert_eq!(c1, c2);
    assert_eq!(
        m1.replace("secret.txt", "X"),
        m2.replace("no-such-file", "X")
    );

    // Symlinks that stay inside the root are served.
    assert_eq!(native_get(server.addr, "inner").unwrap(), b"fine");
    assert_eq!(
        native_get(server.addr, "sub/../ok.txt").map_err(|e| e.0),
        Err(ErrorCode::OutsideRoot)
    );
    assert_eq!(native_get(server.addr, "./ok.txt").unwrap(), b"fine");
    assert!(server.logs().contains("client-"));
}
