//! Primitive field encoding shared by the native messages: big-endian integers and
//! `u16`-length-prefixed UTF-8 strings, read from a bounded cursor over one frame's payload.

use crate::error::{ProtocolError, Result};
use byteorder::{BigEndian, ByteOrder, WriteBytesExt};

/// Reads fields from one frame's payload. Running out of bytes is `Malformed`: the frame length
/// was already known, so a short field is corruption, not "need more".
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Cursor { buf, message }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(ProtocolError::Malformed {
                message: self.message,
                detail: what,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(BigEndian::read_u16(self.take(2, what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(BigEndian::read_u32(self.take(4, what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(BigEndian::read_u64(self.take(8, what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(BigEndian::read_i64(self.take(8, what)?))
    }

    /// A `u16` length followed by that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::InvalidUtf8(self.message))
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Everything left in the payload.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails if any byte is left: every message has an exact layout.
    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                message: self.message,
                extra: self.buf.len(),
            })
        }
    }
}

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    // Writing into a Vec cannot fail.
    let _ = out.write_u16::<BigEndian>(v);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    let _ = out.write_u32::<BigEndian>(v);
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    let _ = out.write_u64::<BigEndian>(v);
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    let _ = out.write_i64::<BigEndian>(v);
}

/// Writes a `u16`-prefixed string, truncating (at a character boundary) anything longer than
/// `u16::MAX` bytes: only human-readable messages can be that long, and a cut message is better
/// than a frame the peer rejects.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_u16(out, end as u16);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_layout() {
        let mut out = Vec::new();
        put_string(&mut out, "ab");
        assert_eq!(out, [0, 2, b'a', b'b']);
        let mut c = Cursor::new(&out, "test");
        assert_eq!(c.string("s").unwrap(), "ab");
        c.finish().unwrap();
    }

    #[test]
    fn overlong_string_is_cut_at_a_char_boundary() {
        let s = "é".repeat(40_000); // 80,000 bytes
        let mut out = Vec::new();
        put_string(&mut out, &s);
        let len = u16::from_be_bytes([out[0], out[1]]) as usize;
        assert!(len <= u16::MAX as usize && len % 2 == 0);
        assert!(Cursor::new(&out, "t").string("s").is_ok());
    }

    #[test]
    fn short_field_is_malformed() {
        let mut c = Cursor::new(&[0, 5, b'a'], "test");
        assert!(matches!(
            c.string("s"),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut c = Cursor::new(&[1, 2], "test");
        c.u8("a").unwrap();
        assert!(matches!(
            c.finish(),
            Err(ProtocolError::TrailingBytes { extra: 1, .. })
        ));
    }
}
