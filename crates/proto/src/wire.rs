//! The byte-level pieces the peer and bond protocols share: a bounds-checked reader over one
//! frame, and the encoders of names and reasons. Every read checks the length first, so no
//! input can panic.

use crate::socks5::{Address, Socks5Error};

/// Longest node, uplink or source name. Names show up in logs, the API and metrics labels.
pub const MAX_NAME: usize = 64;
/// Longest reason text: enough for an error chain, small enough to log whole.
pub const MAX_REASON: usize = 1024;

/// Why a field did not decode. Each protocol maps these onto its own error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    Truncated,
    Trailing,
    BadName,
    BadString,
    BadAddress(Socks5Error),
}

/// Whether `name` is 1..=64 bytes of `[A-Za-z0-9._-]` and not `.` or `..`.
pub(crate) fn valid_name_bytes(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name != b"."
        && name != b".."
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `LEN NAME`, the name cut to 64 bytes.
pub(crate) fn put_name(out: &mut Vec<u8>, name: &str) {
    let name = name.as_bytes();
    let name = name.get(..MAX_NAME).unwrap_or(name);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

/// `LEN u16 | UTF-8`, cut to 1024 bytes at a character boundary.
pub(crate) fn put_reason(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// A cursor over one frame.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// `LEN NAME`; an empty name is allowed only where `allow_empty`.
    pub(crate) fn name(&mut self, allow_empty: bool) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        if !(valid_name_bytes(raw) || (allow_empty && raw.is_empty())) {
            return Err(WireError::BadName);
        }
        // Only ASCII bytes get here.
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadName)
    }

    pub(crate) fn reason(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        if len > MAX_REASON {
            return Err(WireError::BadString);
        }
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| WireError::BadString)
    }

    pub(crate) fn address(&mut self) -> Result<Address, WireError> {
        match Address::decode(self.buf) {
            Ok(Some((addr, used))) => {
                self.take(used)?;
                Ok(addr)
            }
            Ok(None) => Err(WireError::Truncated),
            Err(error) => Err(WireError::BadAddress(error)),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}
