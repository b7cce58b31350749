//! TLS and access tokens against the real binaries: certificates checked (CA and host name),
//! no plain native clients on a TLS port, tokens stored hashed, permissions by path prefix
//! that reveal nothing about files outside them.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A self-signed certificate for `names`, written as PEM into `dir`.
fn certificate(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn tls_server(dir: &Path, names: &[&str]) -> (Server, PathBuf) {
    let (cert, key) = certificate(dir, names);
    let server = Server::start_with(ServerOpts {
        extra: vec![
            "--tls-cert".into(),
            cert.to_string_lossy().into(),
            "--tls-key".into(),
            key.to_string_lossy().into(),
        ],
        ..ServerOpts::default()
    });
    (server, cert)
}

#[test]
fn tls_download_checks_the_certificate_and_the_name() {
    let certs = tempfile::tempdir().unwrap();
    let (server, ca) = tls_server(certs.path(), &["localhost"]);
    let data = write_random(&server.root, "t.bin", 3 << 20, 81);
    let work = tempfile::tempdir().unwrap();
    let by_name = format!("localhost:{}", server.addr.port());
    let ca = ca.to_string_lossy().into_owned();

    let out = run(client(work.path()).args(["--tls", "--ca", &ca, "get", &by_name, "t.bin"]));
    assert_ok(&out);
    assert!(std::fs::read(work.path().join("t.bin")).unwrap() == data);

    // Another name than the certificate's: refused, exit 3, says why.
    let out = run(client(work.path()).args([
        "--tls",
        "--ca",
        &ca,
        "get",
        &server.target(),
        "t.bin",
        "-o",
        "x",
    ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // A CA the client does not trust: refused.
    let out = run(client(work.path()).args(["--tls", "get", &by_name, "t.bin", "-o", "y"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    // --insecure: works, loudly.
    let out =
        run(client(work.path()).args(["--tls", "--insecure", "get", &by_name, "t.bin", "-o", "z"]));
    assert_ok(&out);
    assert!(stderr(&out).contains("WARNING"), "{}", stderr(&out));
    // A plain native client is not served on the TLS port.
    let out =
        run(client(work.path()).args(["get", &by_name, "t.bin", "-o", "w", "--retries", "0"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(!work.path().join("w").exists());
}

#[test]
fn tls_client_against_a_plain_server_fails_clearly() {
    let server = Server::start();
    std::fs::write(server.root.join("p.txt"), b"plain").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args([
        "--tls",
        "--insecure",
        "get",
        &server.target(),
        "p.txt",
        "--retries",
        "0",
    ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
}

/// `sfts-server token add`: prints the token, stores only its hash.
fn add_token(auth: &Path, name: &str, read: &[&str], write: &[&str]) -> String {
    let mut cmd = std::process::Command::new(bin("sfts-server"));
    cmd.args(["token", "add", name, "--auth-file"]).arg(auth);
    for r in read {
        cmd.args(["--read", r]);
    }
    for w in write {
        cmd.args(["--write", w]);
    }
    let out = run(&mut cmd);
    assert_ok(&out);
    let token = stdout(&out).trim().to_string();
    assert_eq!(token.len(), 64, "token output: {token:?}");
    assert!(!std::fs::read_to_string(auth).unwrap().contains(&token));
    token
}

#[test]
fn tokens_and_permissions() {
    let keys = tempfile::tempdir().unwrap();
    let auth = keys.path().join("access.toml");
    let alice = add_token(&auth, "alice", &["pub"], &["in/alice"]);
    let admin = add_token(&auth, "admin", &[""], &[""]);
    let server = Server::start_with(ServerOpts {
        extra: vec![
            "--auth-file".into(),
            auth.to_string_lossy().into(),
            "--allow-upload".into(),
        ],
        ..ServerOpts::default()
    });
    std::fs::create_dir_all(server.root.join("pub")).unwrap();
    std::fs::create_dir_all(server.root.join("in/alice")).unwrap();
    std::fs::write(server.root.join("pub/open.txt"), b"open").unwrap();
    std::fs::write(server.root.join("secret.txt"), b"secret").unwrap();
    let work = tempfile::tempdir().unwrap();
    let t = server.target();

    // No token, a wrong token: refused, exit 4.
    let out = run(client(work.path()).args(["get", &t, "pub/open.txt"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication required"),
        "{}",
        stderr(&out)
    );
    let out = run(client(work.path()).args(["--token", "not-a-token", "get", &t, "pub/open.txt"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // Alice reads pub/, through SFTS_TOKEN too.
    let out = run(client(work.path())
        .env("SFTS_TOKEN", &alice)
        .args(["get", &t, "pub/open.txt"]));
    assert_ok(&out);
    // Outside her prefixes: the same refusal whether the file exists or not.
    let secret = run(client(work.path()).args(["--token", &alice, "get", &t, "secret.txt"]));
    let missing = run(client(work.path()).args(["--token", &alice, "get", &t, "missing.txt"]));
    assert_eq!((code(&secret), code(&missing)), (4, 4));
    assert!(
        stderr(&secret).contains("permission denied"),
        "{}",
        stderr(&secret)
    );
    assert_eq!(
        stderr(&secret).replace("secret.txt", "X"),
        stderr(&missing).replace("missing.txt", "X"),
        "the refusal tells whether the file exists"
    );
    let out = run(client(work.path()).args(["--token", &alice, "stat", &t, "secret.txt"]));
    assert_eq!(code(&out), 4);
    // Her listing of the root shows the way to what she may read, nothing else.
    let out = run(client(work.path()).args(["--token", &alice, "list", &t, "-r", "--json"]));
    assert_ok(&out);
    let listing = stdout(&out);
    assert!(listing.contains("open.txt"), "{listing}");
    assert!(!listing.contains("secret"), "{listing}");

    // Writes: only below in/alice.
    write_random(work.path(), "up.bin", 5000, 82);
    let out =
        run(client(work.path()).args(["--token", &alice, "put", &t, "up.bin", "in/alice/up.bin"]));
    assert_ok(&out);
    let out = run(client(work.path()).args(["--token", &alice, "put", &t, "up.bin", "pub/up.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!server.root.join("pub/up.bin").exists());

    // The admin reads everything.
    let out =
        run(client(work.path()).args(["--token", &admin, "get", &t, "secret.txt", "-o", "s"]));
    assert_ok(&out);

    // The original protocol cannot authenticate: refused.
    let out = run(client(work.path()).args([
        "get",
        "--protocol",
        "legacy",
        &t,
        "pub/open.txt",
        "-o",
        "l",
    ]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // Every decision is logged with the user's name, never the token.
    let logs = server.logs();
    assert!(logs.contains("alice"), "{logs}");
    assert!(
        !logs.contains(&alice) && !logs.contains(&admin),
        "a token is in the log"
    );
}
