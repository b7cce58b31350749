//! Access tokens and permissions (`--auth-file`).
//!
//! The access file is TOML, one `[[token]]` table per token:
//!
//! ```toml
//! [[token]]
//! name = "alice"                      # who, for logs and messages
//! sha256 = "9f86d081884c7d65..."      # SHA-256 of the token, lowercase hex: never the token
//! read = [""]                         # path prefixes alice may read ("" = everything)
//! write = ["incoming/alice"]          # path prefixes alice may write (upload, mkdir)
//! ```
//!
//! Tokens are compared by hashing what the client sent and comparing the digest with every
//! entry in constant time (no early exit), so timing tells nothing about which bytes matched.
//! Prefixes match whole path components: `a/b` allows `a/b` and `a/b/c`, not `a/bc`.

use crate::error::ServerError;
use sfts_protocol::checksum::{from_hex, sha256, to_hex};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Length of a generated token in random bytes (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// One token's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name, for logs and messages.
    pub name: String,
    sha256: [u8; 32],
    read: Vec<String>,
    write: Vec<String>,
}

/// The parsed access file.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    users: Vec<User>,
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Get, Stat, List.
    Read,
    /// PutBegin, Mkdir.
    Write,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
struct FileFormat {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

/// Normalises a prefix: no leading or trailing `/`, `.` and `/` mean everything.
fn normalise(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// True when `path` is `prefix` or below it (whole components).
fn within(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

/// The path as the permission check sees it: `/`-separated, no `.` components, no leading or
/// trailing `/`. Paths with `..` never get here (confinement refuses them first).
fn canonical(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl AccessList {
    /// Reads and checks an access file.
    pub fn load(file: &Path) -> Result<AccessList, ServerError> {
        let bad = |detail: String| ServerError::AuthFile {
            path: file.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let parsed: FileFormat = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut users = Vec::new();
        for e in parsed.token {
            let digest = from_hex(&e.sha256, "sha256")
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "token '{}': sha256 must be 64 hex digits (the SHA-256 of the token, \
                         never the token itself)",
                        e.name
                    ))
                })?;
            if e.name.trim().is_empty() {
                return Err(bad("a token has an empty name".into()));
            }
            if users.iter().any(|u: &User| u.name == e.name) {
                return Err(bad(format!("the name '{}' appears twice", e.name)));
            }
            users.push(User {
                name: e.name,
                sha256: digest,
                read: e.read.iter().map(|p| normalise(p)).collect(),
                write: e.write.iter().map(|p| normalise(p)).collect(),
            });
        }
        Ok(AccessList { users })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file lists no token (nobody can do anything).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a token belongs to, compared in constant time against every entry.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        let digest = sha256(token.as_bytes());
        let mut found = None;
        for u in &self.users {
            if bool::from(u.sha256.ct_eq(&digest)) {
                found = Some(u);
            }
        }
        found
    }
}

impl User {
    /// Whether this user may `access` `path` (relative to the root).
    pub fn allows(&self, access: Access, path: &str) -> bool {
        let path = canonical(path);
        let prefixes = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        prefixes.iter().any(|p| within(&path, p))
    }

    /// Whether `path` should appear in a listing: readable itself, or a directory on the way
    /// to something readable (so `list` can walk down to what one may see).
    pub fn may_see(&self, path: &str) -> bool {
        let path = canonical(path);
        self.read
            .iter()
            .any(|p| within(&path, p) || within(p, &path))
    }

    /// The refusal message; the same whether the path exists or not.
    pub fn denied(&self, access: Access, path: &str) -> String {
        format!(
            "permission denied: '{}' may not {} '{path}'",
            self.name,
            access.verb()
        )
    }
}

/// Generates a token, appends its entry (with the token's SHA-256, never the token) to
/// `file` (created with mode 0600 if missing) and returns the token to show the operator once.
pub fn add_token(
    file: &Path,
    name: &str,
    read: &[String],
    write: &[String],
) -> Result<String, ServerError> {
    let bad = |detail: String| ServerError::AuthFile {
        path: file.to_path_buf(),
        detail,
    };
    if name.trim().is_empty() || name.contains(['"', '\n', '\\']) {
        return Err(bad(format!("'{name}' is not a usable name")));
    }
    if file.exists() {
        let existing = AccessList::load(file)?;
        if existing.users.iter().any(|u| u.name == name) {
            return Err(bad(format!(
                "'{name}' already has a token; remove its [[token]] entry first to replace it"
            )));
        }
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| bad(format!("no randomness available: {e}")))?;
    let token = to_hex(&bytes);
    let entry = Entry {
        name: name.to_string(),
        sha256: to_hex(&sha256(token.as_bytes())),
        read: read.to_vec(),
        write: write.to_vec(),
    };
    let table =
        toml::to_string(&FileFormat { token: vec![entry] }).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    let _ = writeln!(text);
    text.push_str(&table);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file).map_err(|e| bad(e.to_string()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(e.to_string()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_with(entries: &str) -> AccessList {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("access.toml");
        std::fs::write(&f, entries).unwrap();
        AccessList::load(&f).unwrap()
    }

    #[test]
    fn tokens_are_matched_by_their_digest_and_prefixes_by_component() {
        let token_hash = to_hex(&sha256(b"alice-token"));
        let acl = list_with(&format!(
            "[[token]]\nname = \"alice\"\nsha256 = \"{token_hash}\"\nread = [\"pub\", \"team/a\"]\nwrite = [\"in/alice/\"]\n"
        ));
        assert_eq!(acl.len(), 1);
        assert!(acl.authenticate("wrong").is_none());
        let alice = acl.authenticate("alice-token").unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.allows(Access::Read, "pub/x.bin"));
        assert!(alice.allows(Access::Read, "./pub//x.bin"));
        assert!(alice.allows(Access::Read, "team/a"));
        assert!(!alice.allows(Access::Read, "team/ab/x"));
        assert!(!alice.allows(Access::Read, "secret.txt"));
        assert!(!alice.allows(Access::Write, "pub/x.bin"));
        assert!(alice.allows(Access::Write, "in/alice/new.bin"));
        assert!(!alice.allows(Access::Write, "in/bob/new.bin"));
        // Listing the root shows the way down, not the rest.
        assert!(alice.may_see("team"));
        assert!(alice.may_see("team/a/x"));
        assert!(!alice.may_see("secret.txt"));
        assert!(!alice.may_see("team/b"));
        assert_eq!(
            alice.denied(Access::Read, "secret.txt"),
            "permission denied: 'alice' may not read 'secret.txt'"
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        for (text, needle) in [
            (
                "[[token]]\nname = \"x\"\nsha256 = \"plaintext-token\"\n",
                "64 hex digits",
            ),
            ("[[token]]\nname = \"x\"\n", "sha256"),
            ("garbage =", "expected"),
            (
                "[[token]]\nname = \"x\"\nsha256 = \"aa\"\nreed = []\n",
                "unknown field",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = AccessList::load(&f).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = AccessList::load(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn add_token_stores_only_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("access.toml");
        let token = add_token(&f, "bob", &["".into()], &["up/bob".into()]).unwrap();
        assert_eq!(token.len(), 64);
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&token), "the token itself was stored");
        let acl = AccessList::load(&f).unwrap();
        let bob = acl.authenticate(&token).unwrap();
        assert!(bob.allows(Access::Read, "anything"));
        assert!(bob.allows(Access::Write, "up/bob/x"));
        assert!(add_token(&f, "bob", &[], &[]).is_err(), "duplicate name");
        let carol = add_token(&f, "carol", &[], &[]).unwrap();
        assert_eq!(AccessList::load(&f).unwrap().len(), 2);
        assert!(AccessList::load(&f).unwrap().authenticate(&carol).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
