//! `List`: the entries of a directory, flat or recursive, in `ListEntries` frames that each
//! fit the control-frame limit, then `ListEnd{total, truncated}`; or `Error` (`not-found`,
//! `not-a-directory`, `outside-root`, ...). The walk itself is [`crate::listing`].

use super::Native;
use crate::digest::KEEPALIVE_EVERY;
use crate::error::ServerError;
use crate::listing::Walker;
use crate::paths::{self, Refusal};
use sfts_protocol::{Capabilities, ErrorCode, ListBatcher, ListEntry, Message};
use std::time::Instant;
use tracing::info;

impl Native<'_> {
    /// Answers one `List`; refusals keep the session.
    pub(super) fn list(&mut self, path: String, recursive: bool) -> Result<(), ServerError> {
        let peer = self.who();
        let how = if recursive { "recursive " } else { "" };
        info!("{peer} asks for a {how}listing of '{path}'");
        let allowed = self
            .needs(Capabilities::LIST, "List", "LIST")
            .and_then(|()| self.permit_listing(&path, None));
        if let Err(refusal) = allowed {
            return self.refuse(&path, refusal);
        }
        let state = self.s.state;
        let found = paths::locate(&state.root, &path)
            .and_then(|f| self.permit_listing(&path, Some(&f.path)).map(|()| f));
        let found = match found {
            Ok(f) if f.metadata.is_dir() => f,
            Ok(_) => {
                let refusal = Refusal::new(
                    ErrorCode::NotADirectory,
                    format!("'{path}' is not a directory"),
                );
                return self.refuse(&path, refusal);
            }
            Err(refusal) => {
                let refusal = match refusal.code {
                    ErrorCode::NotFound => Refusal::new(
                        ErrorCode::NotFound,
                        format!("directory '{path}' not found under the served root"),
                    ),
                    _ => refusal,
                };
                return self.refuse(&path, refusal);
            }
        };
        // With tokens: only what the user may see, judged by the path as listed and by where
        // it leads.
        let user = self.s.state.access.as_ref().and(self.user);
        let base = path.clone();
        let visible = user.map(|u| {
            move |shown: &str, real: Option<&str>| {
                u.may_see(&format!("{base}/{shown}")) && real.is_none_or(|r| u.may_see(r))
            }
        });
        let visible = visible.as_ref().map(|f| f as &crate::listing::Visible);
        let started = Instant::now();
        let mut batch = ListBatcher::new();
        let mut last_sent = Instant::now();
        let walked = {
            let mut sink = |entry: Option<ListEntry>| -> Result<(), ServerError> {
                match entry {
                    Some(e) => {
                        if let Some(full) = batch.push(e) {
                            self.send(&full)?;
                            last_sent = Instant::now();
                        }
                    }
                    None if last_sent.elapsed() >= KEEPALIVE_EVERY => {
                        if state.stopping() {
                            return Err(ServerError::ShuttingDown);
                        }
                        // Queued behind the entries so far, and sent now with them.
                        self.send(&Message::Data(&[]))?;
                        self.flush()?;
                        last_sent = Instant::now();
                    }
                    None => {}
                }
                Ok(())
            };
            Walker::run(
                &state.root,
                &found.path,
                recursive,
                state.max_list_entries,
                visible,
                &mut sink,
            )
        };
        let walked = match walked {
            Ok(w) => w,
            Err(ServerError::ShuttingDown) => return self.goodbye(),
            Err(e) => return Err(e),
        };
        if let Some(last) = batch.finish() {
            self.send(&last)?;
        }
        info!(
            "listed '{path}' for {peer}: {} entries{} in {:.2} s",
            walked.total,
            if walked.truncated {
                format!(" (cut at the limit of {})", state.max_list_entries)
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        // The files just listed may be fetched without a rate-limit token each (bounded by
        // what one listing may return, however many listings came before).
        self.listed = (self.listed + walked.total).min(state.max_list_entries);
        self.send(&Message::ListEnd {
            total: walked.total,
            truncated: walked.truncated,
        })
    }
}
