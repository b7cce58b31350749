//! Tokens and permissions in a native session (servers started with `--auth-file`).
//!
//! * Before `AuthOk`, the session accepts `Auth` and `SetPriority` (a session setting that
//!   touches nothing; clients may send it first) and nothing else: any other request gets
//!   `Error{AuthRequired}` and the connection is closed. The opening deadline
//!   (`--handshake-timeout`) runs until `AuthOk`, so an unauthenticated client cannot hold a
//!   worker for longer.
//! * A wrong token is answered after [`FAILED_AUTH_DELAY`] with `Error{AuthRequired}`, logged
//!   with the client's address (never the token), and the connection is closed.
//! * After `AuthOk`, every request is checked against the user's prefixes *before* the file
//!   system is touched, on the path as written (after the text checks of
//!   [`paths::check_syntax`], which touch nothing either), and again on the path it resolves
//!   to, so that a symbolic link cannot lead out of the user's prefixes. The refusal is the
//!   same whether the path exists or not.

use super::{Incoming, Native};
use crate::auth::{Access, User};
use crate::error::ServerError;
use crate::fileid::relative_name;
use crate::paths::{self, Refusal};
use sfts_protocol::{ErrorCode, Message};
use std::fmt;
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

/// How long the answer to a wrong token waits: guessing is slow, and a flood of attempts
/// costs the server a sleeping thread, not a busy one.
pub const FAILED_AUTH_DELAY: Duration = Duration::from_secs(1);

/// The refusal of a request sent before `Auth`.
pub const AUTH_REQUIRED: &str = "authentication required: this server needs an access token \
                                 (sfts-client --token or SFTS_TOKEN)";

/// The client, for logs: its address and, once known, its user name.
pub(super) struct Who<'a>(std::net::SocketAddr, Option<&'a str>);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{} ('{name}')", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// What the gate made of a message.
pub(super) enum Gate {
    /// Handle it as usual.
    Pass(Incoming),
    /// Done (a good token).
    Handled,
    /// The session is over (a wrong token, a request without one).
    End,
}

impl<'a> Native<'a> {
    /// The client, for logs.
    pub(super) fn who(&self) -> Who<'a> {
        Who(self.s.peer, self.user.map(|u| u.name.as_str()))
    }

    /// Before `AuthOk`: handles `Auth`, lets `SetPriority` and the end of the session through,
    /// refuses the rest.
    pub(super) fn gate(&mut self, incoming: Incoming) -> Result<Gate, ServerError> {
        match incoming {
            Incoming::Auth(token) => {
                self.authenticate(&token)?;
                Ok(match self.user {
                    Some(_) => Gate::Handled,
                    None => Gate::End,
                })
            }
            pass @ (Incoming::Priority(_)
            | Incoming::Closed
            | Incoming::Hello { .. }
            | Incoming::Unexpected(_)
            | Incoming::Broken(_)) => Ok(Gate::Pass(pass)),
            other => {
                warn!(
                    "refused {} from {}: no token presented (authentication required)",
                    other.name(),
                    self.s.peer
                );
                let _ = self.send_error(ErrorCode::AuthRequired, AUTH_REQUIRED);
                let _ = self.flush();
                self.io.get_mut().linger_close();
                Ok(Gate::End)
            }
        }
    }

    /// Checks a token; on success the session goes on as that user.
    fn authenticate(&mut self, token: &str) -> Result<(), ServerError> {
        let peer = self.s.peer;
        let access = self.s.state.access.as_ref().expect("a server with tokens");
        match access.authenticate(token) {
            Some(user) => {
                info!("{peer} authenticated as '{}'", user.name);
                self.user = Some(user);
                self.io.get_mut().link_mut().end_opening();
                self.send(&Message::AuthOk {
                    user: user.name.clone(),
                })
            }
            None => {
                warn!("authentication failed for {peer}: invalid access token");
                let _ = self.flush();
                self.s.state.pause(FAILED_AUTH_DELAY);
                let _ = self.send_error(ErrorCode::AuthRequired, "invalid access token");
                let _ = self.flush();
                self.io.get_mut().linger_close();
                Ok(())
            }
        }
    }

    /// `Auth` after the gate: on a server without tokens it is unsupported (the session goes
    /// on); a second one is a protocol violation.
    pub(super) fn auth_again(&mut self, _token: String) -> Result<(), ServerError> {
        if self.s.state.access.is_none() {
            warn!(
                "{} presented a token, but this server does not use tokens",
                self.s.peer
            );
            return self.send_error(
                ErrorCode::Unsupported,
                "this server does not use access tokens (it was started without --auth-file)",
            );
        }
        self.reject("a second Auth on an authenticated session".into())
    }

    /// The user, on a server with tokens.
    fn checked_user(&self) -> Option<&'a User> {
        self.s.state.access.as_ref().and(self.user)
    }

    /// May the user `access` `path` as written? Checks the text first (no file system).
    pub(super) fn permit(&self, access: Access, path: &str) -> Result<(), Refusal> {
        let Some(user) = self.checked_user() else {
            return Ok(());
        };
        paths::check_syntax(path)?;
        if user.allows(access, path) {
            Ok(())
        } else {
            Err(self.denied(user, access, path))
        }
    }

    /// May the user `access` `resolved` (canonical, under the root), asked for as `path`?
    pub(super) fn permit_resolved(
        &self,
        access: Access,
        path: &str,
        resolved: &Path,
    ) -> Result<(), Refusal> {
        let Some(user) = self.checked_user() else {
            return Ok(());
        };
        let real = relative_name(&self.s.state.root, resolved);
        if user.allows(access, &real) {
            Ok(())
        } else {
            Err(self.denied(user, access, path))
        }
    }

    /// May the user list `path` (on the way to something readable)? Text first, then, with
    /// `resolved`, where it leads.
    pub(super) fn permit_listing(
        &self,
        path: &str,
        resolved: Option<&Path>,
    ) -> Result<(), Refusal> {
        let Some(user) = self.checked_user() else {
            return Ok(());
        };
        paths::check_syntax(path)?;
        let real = resolved.map(|r| relative_name(&self.s.state.root, r));
        if user.may_see(path) && real.is_none_or(|r| user.may_see(&r)) {
            Ok(())
        } else {
            Err(self.denied(user, Access::Read, path))
        }
    }

    fn denied(&self, user: &User, access: Access, path: &str) -> Refusal {
        Refusal::new(ErrorCode::PermissionDenied, user.denied(access, path))
    }
}
