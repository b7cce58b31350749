//! The original protocol in both directions: an original client against `sfts-server`, and
//! `sfts-client --protocol legacy` against an original server.

use crate::fakes::*;
use crate::support::*;

#[test]
fn original_client_fetches_from_sfts_server() {
    let server = Server::start();
    let data = write_random(&server.root, "docs/report.pdf", 200_000, 11);
    match legacy_get(server.addr, "docs/report.pdf") {
        LegacyReply::Ok {
            name,
            data: got,
            md5_hex,
        } => {
            assert_eq!(name, "report.pdf");
            assert!(got == data);
            assert_eq!(
                md5_hex,
                coreutils_digest("md5sum", &server.root.join("docs/report.pdf"))
            );
        }
        LegacyReply::Error(e) => panic!("refused: {e}"),
    }
    // Empty file too.
    std::fs::write(server.root.join("empty"), b"").unwrap();
    let LegacyReply::Ok { data, md5_hex, .. } = legacy_get(server.addr, "empty") else {
        panic!("empty file refused")
    };
    assert!(data.is_empty());
    assert_eq!(md5_hex, "d41d8cd98f00b204e9800998ecf8427e");
}

#[test]
fn original_client_gets_the_original_not_found_message() {
    let server = Server::start();
    match legacy_get(server.addr, "nope.txt") {
        LegacyReply::Error(msg) => assert_eq!(msg, "File 'nope.txt' not found on server"),
        LegacyReply::Ok { .. } => panic!("served a missing file"),
    }
    // Escapes are refused on the original protocol too.
    std::fs::write(server.root.parent().unwrap().join("s.txt"), b"secret").unwrap();
    assert!(matches!(
        legacy_get(server.addr, "../s.txt"),
        LegacyReply::Error(_)
    ));
}

#[test]
fn sfts_client_fetches_from_an_original_server() {
    let data = random_bytes(123_457, 5);
    let md5 = {
        let mut h = sfts_protocol::MultiHasher::new(sfts_protocol::DigestSet::of(&[
            sfts_protocol::Algorithm::Md5,
        ]));
        h.update(&data);
        h.finish()[0].to_hex()
    };
    let (addr, handle) = legacy_server(LegacyAnswer::File {
        data: data.clone(),
        md5_hex: md5.clone(),
    });
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args([
        "get",
        "--protocol",
        "legacy",
        &addr.to_string(),
        "dir/report.pdf",
        "-o",
        "r.pdf",
    ]));
    assert_ok(&out);
    assert_eq!(handle.join().unwrap(), "dir/report.pdf");
    assert!(std::fs::read(work.path().join("r.pdf")).unwrap() == data);
    assert_eq!(printed_digest(&stdout(&out)), md5);
}

#[test]
fn sfts_client_reports_an_original_servers_refusal() {
    let (addr, handle) = legacy_server(LegacyAnswer::NotFound);
    let work = tempfile::tempdir().unwrap();
    let out =
        run(client(work.path()).args(["get", "--protocol", "legacy", &addr.to_string(), "x.bin"]));
    handle.join().unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("File 'x.bin' not found on server"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path().join("x.bin").exists());
}

#[test]
fn corrupted_data_is_never_published() {
    // Original server whose MD5 does not match the bytes it sends.
    let (addr, handle) = legacy_server(LegacyAnswer::File {
        data: random_bytes(50_000, 1),
        md5_hex: "0123456789abcdef0123456789abcdef".into(),
    });
    let work = tempfile::tempdir().unwrap();
    let out =
        run(client(work.path()).args(["get", "--protocol", "legacy", &addr.to_string(), "c.bin"]));
    handle.join().unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        !work.path().join("c.bin").exists(),
        "corrupt file under the final name"
    );
    assert!(
        work.path().join("c.bin.sfts-part").exists(),
        "received bytes not kept"
    );

    // Native server whose trailer does not match.
    let (addr, handle) = lying_native_server(random_bytes(70_000, 2), b"other".to_vec());
    let out = run(client(work.path()).args(["get", &addr.to_string(), "d.bin"]));
    handle.join().unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("integrity"), "{}", stderr(&out));
    assert!(!work.path().join("d.bin").exists());
}

#[test]
fn legacy_protocol_refuses_sha256() {
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args([
        "get",
        "--protocol",
        "legacy",
        "--checksum",
        "sha256",
        "127.0.0.1:9",
        "x",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("MD5"), "{}", stderr(&out));
}
