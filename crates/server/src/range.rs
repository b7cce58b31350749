//! Which bytes a `Get` is answered with: the requested range cut at the end of the file, or the
//! whole file when the client's copy is of another version (`if_match`, like HTTP's
//! `If-Range`), or a refusal.

use crate::fileid::FileId;
use crate::paths::Refusal;
use sfts_protocol::{ErrorCode, GetRequest};

/// The bytes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub offset: u64,
    /// Number of bytes (possibly 0).
    pub length: u64,
    /// True when the client asked for a range of a version the file no longer is, and gets the
    /// whole file instead.
    pub restarted: bool,
}

impl Range {
    /// No bytes at all (what a refused request is recorded with).
    pub const EMPTY: Range = Range {
        offset: 0,
        length: 0,
        restarted: false,
    };

    /// True when the range is the whole file of `size` bytes.
    pub fn is_whole(&self, size: u64) -> bool {
        self.offset == 0 && self.length == size
    }
}

/// The answer to `req` for the file `id`. `ranges_allowed`: the session negotiated `RESUME`.
pub fn plan(req: &GetRequest, id: &FileId, ranges_allowed: bool) -> Result<Range, Refusal> {
    let size = id.size;
    let whole = Range {
        offset: 0,
        length: size,
        restarted: false,
    };
    let wants_range = req.offset != 0 || req.length < size;
    if wants_range && !ranges_allowed {
        return Err(Refusal::new(
            ErrorCode::Unsupported,
            "ranges need the RESUME capability, which this session did not negotiate; \
             ask for the whole file",
        ));
    }
    if let Some(v) = req.if_match {
        if (v.size, v.mtime_ns) != (size, id.mtime_ns) {
            return Ok(Range {
                restarted: true,
                ..whole
            });
        }
    }
    if req.offset > size {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "offset {} is beyond the end of '{}', which has {size} bytes",
                req.offset, req.path
            ),
        ));
    }
    Ok(Range {
        offset: req.offset,
        length: req.length.min(size - req.offset),
        restarted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_protocol::{DigestSet, FileVersion, TO_END};

    fn id(size: u64, mtime_ns: i64) -> FileId {
        FileId {
            size,
            mtime_ns,
            ctime_ns: 0,
            inode: 1,
            device: 1,
        }
    }

    fn req(offset: u64, length: u64, if_match: Option<(u64, i64)>) -> GetRequest {
        GetRequest {
            offset,
            length,
            if_match: if_match.map(|(size, mtime_ns)| FileVersion { size, mtime_ns }),
            ..GetRequest::whole("f", 4096, DigestSet::EMPTY)
        }
    }

    fn answer(r: &GetRequest, f: &FileId) -> Result<(u64, u64, bool), ErrorCode> {
        plan(r, f, true)
            .map(|r| (r.offset, r.length, r.restarted))
            .map_err(|e| e.code)
    }

    #[test]
    fn ranges_are_cut_at_the_end() {
        let f = id(100, 7);
        assert_eq!(answer(&req(0, TO_END, None), &f), Ok((0, 100, false)));
        assert_eq!(answer(&req(10, TO_END, None), &f), Ok((10, 90, false)));
        assert_eq!(answer(&req(10, 20, None), &f), Ok((10, 20, false)));
        assert_eq!(answer(&req(90, 20, None), &f), Ok((90, 10, false)));
        assert_eq!(answer(&req(100, TO_END, None), &f), Ok((100, 0, false)));
        assert_eq!(answer(&req(5, 0, None), &f), Ok((5, 0, false)));
        assert_eq!(
            answer(&req(101, TO_END, None), &f),
            Err(ErrorCode::BadRequest)
        );
        assert!(plan(&req(101, 1, None), &f, true)
            .unwrap_err()
            .message
            .contains("offset 101 is beyond the end of 'f', which has 100 bytes"));
        assert!(plan(&req(0, TO_END, None), &f, true).unwrap().is_whole(100));
    }

    #[test]
    fn another_version_gets_the_whole_file() {
        let f = id(100, 7);
        assert_eq!(
            answer(&req(50, TO_END, Some((100, 7))), &f),
            Ok((50, 50, false))
        );
        assert_eq!(
            answer(&req(50, TO_END, Some((100, 8))), &f),
            Ok((0, 100, true))
        );
        assert_eq!(answer(&req(50, 10, Some((99, 7))), &f), Ok((0, 100, true)));
        // Beyond the end of a file that changed: the whole new file, not an error.
        assert_eq!(
            answer(&req(500, TO_END, Some((500, 7))), &f),
            Ok((0, 100, true))
        );
        assert_eq!(
            answer(&req(500, TO_END, Some((100, 7))), &f),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn ranges_need_resume() {
        let f = id(100, 7);
        for r in [req(1, TO_END, None), req(0, 50, None)] {
            assert_eq!(
                plan(&r, &f, false).unwrap_err().code,
                ErrorCode::Unsupported
            );
        }
        assert!(plan(&req(0, TO_END, None), &f, false).is_ok());
        assert!(plan(&req(0, 100, None), &f, false).is_ok());
    }
}
