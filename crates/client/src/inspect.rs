//! `stat` and `verify`: look at a remote file, or compare a local one, without transferring it.
//!
//! The server's `Stat` answer carries the digests it has cached. When one is missing, the
//! client asks for the zero-length range at the end of the file: the server sends no data, only
//! the trailer with the whole-file digests (which it computes once and caches).

use crate::cli::{Checksum, GetOptions, GlobalArgs, StatArgs, VerifyArgs};
use crate::error::{ClientError, Kept};
use crate::fetch::{Fetched, Fetcher};
use crate::interrupt::Interrupt;
use crate::progress::Bytes;
use crate::sinks::BufferSink;
use serde_json::{json, Value};
use sfts_protocol::checksum::digest_reader;
use sfts_protocol::{Algorithm, Capabilities, Digest, DigestSet, FileInfo, FileKind, FileVersion};
use std::fs::File;
use std::path::Path;

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The algorithm compared.
    pub algorithm: Algorithm,
    /// The local file's digest (`None` when the sizes already differed).
    pub local: Option<Digest>,
    /// The expected digest.
    pub expected: Digest,
    /// Why they differ, when they do.
    pub mismatch: Option<String>,
}

/// A remote file's description with the whole-file digests asked for (where it is a file).
pub fn remote_info(
    f: &mut Fetcher<'_>,
    path: &str,
    want: DigestSet,
) -> Result<FileInfo, ClientError> {
    let mut info = f.stat()?.ok_or_else(|| ClientError::Refused {
        remote: path.to_string(),
        message: "the server does not describe files (it has no Stat)".into(),
    })?;
    if info.kind != FileKind::File {
        return Ok(info);
    }
    let mut missing = DigestSet::default();
    for a in want.iter() {
        if !info.digests.iter().any(|d| d.algorithm == a) {
            missing.insert(a);
        }
    }
    if missing == DigestSet::default() {
        return Ok(info);
    }
    if !f.server_has(Capabilities::RESUME) {
        return Err(ClientError::Refused {
            remote: path.to_string(),
            message: "the server has no digest of this file and cannot send one without the \
                      data (it offers no ranges)"
                .into(),
        });
    }
    let mut version = Some(FileVersion {
        size: info.size,
        mtime_ns: info.mtime_ns,
    });
    let mut nothing = BufferSink::default();
    match f.fetch(
        info.size,
        0,
        missing,
        &mut version,
        &mut nothing,
        &Kept::Nothing,
    )? {
        Fetched::Done(trailer) => {
            for d in trailer {
                if missing.contains(d.algorithm) {
                    info.digests.push(d);
                }
            }
            info.digests.sort_by_key(|d| d.algorithm);
            Ok(info)
        }
        Fetched::Changed(_) => Err(ClientError::Aborted {
            received: 0,
            size: info.size,
            message: format!("'{path}' changed on the server while it was being described"),
            kept: Kept::Nothing,
        }),
    }
}

/// `sfts-client stat`.
pub fn stat(args: StatArgs, global: &GlobalArgs) -> Result<Value, ClientError> {
    let (server, rest) = global.split_server(args.args, 2)?;
    let path = rest.into_iter().next().unwrap_or_default();
    if path.is_empty() {
        return Err(ClientError::Usage("the remote path is empty".into()));
    }
    let opts = GetOptions::for_path(server, path, global);
    let interrupt = Interrupt::new();
    let mut f = Fetcher::connect(&opts, &interrupt)?;
    let all = DigestSet::of(&[Algorithm::Sha256, Algorithm::Md5]);
    let info = remote_info(&mut f, &opts.remote, all)?;
    Ok(info_json(&opts.remote, &info))
}

/// The `stat` answer as JSON (also the source of the text form).
pub fn info_json(path: &str, info: &FileInfo) -> Value {
    let mut v = json!({
        "path": path,
        "type": kind_name(info.kind),
        "size": info.size,
        "mtime_ns": info.mtime_ns,
        "modified": crate::resume::time_text(info.mtime_ns),
    });
    for d in &info.digests {
        v[d.algorithm.name()] = json!(d.to_hex());
    }
    v
}

/// The `stat` answer as aligned text.
pub fn info_text(v: &Value) -> String {
    let mut out = format!(
        "path      {}\ntype      {}\nsize      {} ({})\nmodified  {}\n",
        v["path"].as_str().unwrap_or_default(),
        v["type"].as_str().unwrap_or_default(),
        v["size"],
        Bytes(v["size"].as_u64().unwrap_or(0)),
        v["modified"].as_str().unwrap_or_default(),
    );
    // Whatever the server has cached beyond those two (BLAKE3, XXH128) is shown too.
    let shown = [
        Algorithm::Sha256,
        Algorithm::Md5,
        Algorithm::Blake3,
        Algorithm::Xxh128,
    ];
    for name in shown.map(Algorithm::name) {
        if let Some(hex) = v[name].as_str() {
            out.push_str(&format!("{name:<10}{hex}\n"));
        }
    }
    out
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Other => "other",
    }
}

/// The algorithm of a hex digest: `--algo`, else from its length.
pub fn algorithm_for(hex: &str, algo: Option<Checksum>) -> Result<Algorithm, ClientError> {
    let algorithm = match (algo, hex.len()) {
        (Some(a), _) => Algorithm::from(a),
        (None, 64) => Algorithm::Sha256,
        (None, 32) => Algorithm::Md5,
        (None, n) => {
            return Err(ClientError::Usage(format!(
                "a {n}-digit checksum is neither SHA-256 (64 hex digits) nor MD5 or XXH128 \
                 (32); name the algorithm with --algo"
            )))
        }
    };
    Ok(algorithm)
}

/// `sfts-client verify`.
pub fn verify(args: VerifyArgs, global: &GlobalArgs) -> Result<Verdict, ClientError> {
    let local = args.local.as_path();
    match (&args.checksum, args.remote.is_empty()) {
        (Some(_), false) => Err(ClientError::Usage(
            "give either --checksum HEX or a remote file to compare with, not both".into(),
        )),
        (None, true) => Err(ClientError::Usage(
            "nothing to compare with: give --checksum HEX or [HOST:PORT] REMOTE".into(),
        )),
        (Some(hex), true) => {
            let algorithm = algorithm_for(hex.trim(), args.algo)?;
            let parse = |algorithm: Algorithm| {
                Digest::from_hex(algorithm, hex.trim()).map_err(|e| {
                    ClientError::Usage(format!(
                        "--checksum '{hex}' is not a {algorithm} digest: {e}"
                    ))
                })
            };
            let expected = parse(algorithm)?;
            if args.algo.is_none() && algorithm == Algorithm::Md5 {
                // 32 hex digits are an MD5 or an XXH128 (both printed by `get`): whichever
                // the file has, from one read.
                return md5_or_xxh128(local, expected, parse(Algorithm::Xxh128)?);
            }
            let (_, digest) = hash_local(local, algorithm)?;
            Ok(compare(algorithm, Some(digest), expected, None))
        }
        (None, false) => {
            let (server, rest) = global.split_server(args.remote.clone(), 2)?;
            let remote = rest.into_iter().next().unwrap_or_default();
            if remote.is_empty() {
                return Err(ClientError::Usage("the remote path is empty".into()));
            }
            let algorithm = args.algo.map_or(Algorithm::Sha256, Algorithm::from);
            let local_size = std::fs::metadata(local)
                .map_err(|e| ClientError::local("cannot read", local, e))?
                .len();
            let opts = GetOptions::for_path(server, remote, global);
            let interrupt = Interrupt::new();
            let mut f = Fetcher::connect(&opts, &interrupt)?;
            let info = remote_info(&mut f, &opts.remote, DigestSet::of(&[algorithm]))?;
            if info.kind != FileKind::File {
                return Err(ClientError::Refused {
                    remote: opts.remote.clone(),
                    message: format!("it is a {}, not a regular file", kind_name(info.kind)),
                });
            }
            let expected = info
                .digests
                .iter()
                .find(|d| d.algorithm == algorithm)
                .cloned()
                .ok_or_else(|| ClientError::Protocol {
                    detail: format!("the server sent no {algorithm} digest"),
                    kept: Kept::Nothing,
                })?;
            if local_size != info.size {
                let why = format!(
                    "sizes differ: {local_size} bytes here, {} on the server",
                    info.size
                );
                return Ok(compare(algorithm, None, expected, Some(why)));
            }
            let (_, digest) = hash_local(local, algorithm)?;
            Ok(compare(algorithm, Some(digest), expected, None))
        }
    }
}

fn compare(
    algorithm: Algorithm,
    local: Option<Digest>,
    expected: Digest,
    why: Option<String>,
) -> Verdict {
    let mismatch = why.or_else(|| match &local {
        Some(d) if *d == expected => None,
        Some(d) => Some(format!(
            "{algorithm} differs: expected {expected}, the local file has {d}"
        )),
        None => Some("not compared".into()),
    });
    Verdict {
        algorithm,
        local,
        expected,
        mismatch,
    }
}

/// The verdict for a 32-digit checksum given without `--algo`: OK if it is the file's
/// XXH128 or its MD5, else a mismatch worded for MD5 that says XXH128 was tried too.
fn md5_or_xxh128(local: &Path, md5: Digest, xxh128: Digest) -> Result<Verdict, ClientError> {
    let both = DigestSet::of(&[Algorithm::Md5, Algorithm::Xxh128]);
    let (_, mut ours) = hash_local_set(local, both)?;
    let (our_xxh128, our_md5) = (ours.pop(), ours.pop());
    if our_xxh128.as_ref() == Some(&xxh128) && our_md5.as_ref() != Some(&md5) {
        return Ok(compare(Algorithm::Xxh128, our_xxh128, xxh128, None));
    }
    let mut verdict = compare(Algorithm::Md5, our_md5, md5, None);
    if let Some(why) = &mut verdict.mismatch {
        why.push_str(" (nor is it the file's xxh128)");
    }
    Ok(verdict)
}

/// Hashes a local file.
fn hash_local(path: &Path, algorithm: Algorithm) -> Result<(u64, Digest), ClientError> {
    let (size, mut digests) = hash_local_set(path, DigestSet::of(&[algorithm]))?;
    Ok((size, digests.remove(0)))
}

/// Hashes a local file with every algorithm of `set` (in code order).
fn hash_local_set(path: &Path, set: DigestSet) -> Result<(u64, Vec<Digest>), ClientError> {
    let file = File::open(path).map_err(|e| ClientError::local("cannot open", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    digest_reader(file, set, &mut buf).map_err(|e| ClientError::local("cannot read", path, e))
}

/// The verdict as JSON.
pub fn verdict_json(local: &Path, v: &Verdict) -> Value {
    json!({
        "status": if v.mismatch.is_none() { "ok" } else { "mismatch" },
        "local": local.display().to_string(),
        "algorithm": v.algorithm.name(),
        "expected": v.expected.to_hex(),
        "actual": v.local.as_ref().map(Digest::to_hex),
        "reason": v.mismatch,
    })
}

/// The verdict as one line, in the spirit of `sha256sum -c`.
pub fn verdict_text(local: &Path, v: &Verdict) -> String {
    match &v.mismatch {
        None => format!("{}: OK ({} {})", local.display(), v.algorithm, v.expected),
        Some(why) => format!("{}: MISMATCH ({why})", local.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_text_shows_every_digest_the_server_had() {
        let digest = |a: Algorithm, byte: u8| Digest::new(a, vec![byte; a.output_len()]).unwrap();
        let info = FileInfo {
            kind: FileKind::File,
            size: 3,
            mtime_ns: 0,
            digests: vec![
                digest(Algorithm::Sha256, 1),
                digest(Algorithm::Xxh128, 0xab),
            ],
        };
        let text = info_text(&info_json("f", &info));
        assert!(
            text.contains(&format!("sha256    {}\n", "01".repeat(32))),
            "{text}"
        );
        assert!(
            text.contains(&format!("xxh128    {}\n", "ab".repeat(16))),
            "{text}"
        );
        assert!(!text.contains("md5") && !text.contains("blake3"), "{text}");
    }

    #[test]
    fn algorithm_from_the_length() {
        assert_eq!(
            algorithm_for(&"a".repeat(64), None).unwrap(),
            Algorithm::Sha256
        );
        assert_eq!(
            algorithm_for(&"a".repeat(32), None).unwrap(),
            Algorithm::Md5
        );
        assert_eq!(
            algorithm_for(&"a".repeat(64), Some(Checksum::Md5)).unwrap(),
            Algorithm::Md5
        );
        let e = algorithm_for("abc", None).unwrap_err();
        assert!(e.to_string().contains("--algo"), "{e}");
    }

    #[test]
    fn local_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // SHA-256 and MD5 of "abc" (FIPS 180-2 and RFC 1321 test vectors).
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        for (hex, alg) in [(sha, Algorithm::Sha256), (md5, Algorithm::Md5)] {
            let (size, d) = hash_local(&path, alg).unwrap();
            assert_eq!(size, 3);
            let v = compare(alg, Some(d), Digest::from_hex(alg, hex).unwrap(), None);
            assert!(v.mismatch.is_none());
            assert!(verdict_text(&path, &v).ends_with(&format!(": OK ({alg} {hex})")));
        }
        let (_, d) = hash_local(&path, Algorithm::Md5).unwrap();
        let wrong = Digest::from_hex(Algorithm::Md5, &"0".repeat(32)).unwrap();
        let v = compare(Algorithm::Md5, Some(d), wrong, None);
        assert!(verdict_text(&path, &v).contains("MISMATCH (md5 differs"));
        assert_eq!(verdict_json(&path, &v)["status"], "mismatch");
    }
}
