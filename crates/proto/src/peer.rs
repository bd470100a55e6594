//! Peer protocol frames: what two booster nodes say to each other inside the Noise channel
//! (`booster::noise`). Sans-IO: bytes in, [`Frame`] out, and back.
//!
//! One frame is exactly one Noise transport message, so [`Frame::decode`] always gets a
//! complete plaintext. There is no "need more bytes" here: a short frame is
//! [`PeerError::Truncated`] and bytes after the frame are [`PeerError::Trailing`]. A `Data`
//! frame has no length of its own: its payload is the rest of the message, which the Noise
//! layer delimits and authenticates.
//!
//! Wire layout (all integers big-endian; byte-by-byte tables in `docs/protocol.md`):
//!
//! ```text
//! frame        VERSION=1 | TYPE | BODY
//! name         LEN(1..=64) | [A-Za-z0-9._-]{LEN}        (not "." or "..")
//! uplink       LEN(0..=64) | same characters             (empty = "lender picks")
//! reason       LEN u16 (0..=1024) | UTF-8
//! address      ATYP | ADDR | PORT                        (as in SOCKS5, `socks5::Address`)
//!
//! 0x01 Hello      name(node) | FLAGS u8                  bit 0: wants to borrow uplinks
//! 0x02 Heartbeat  SEQ u32
//! 0x03 Load       COUNT u8 (0..=32) | COUNT × uplink-load
//!                 uplink-load = name | HEALTH u8 (0..=3) | CAPACITY u64 | RATE_RX u64
//!                               | RATE_TX u64 | OPEN u32 | RTT_US u32 | CAP_LEFT u64 | MAX_RATE u64
//! 0x04 Bye        reason
//! 0x10 Open       uplink | address (port ≠ 0)
//! 0x11 OpenOk     address(bound) | address(remote)
//! 0x12 OpenErr    CODE u8 (SOCKS5 reply code 1..=8) | reason
//! 0x13 Data       BYTES (1 or more: the rest of the frame)
//! 0x14 Fin        (empty)
//! 0x15 Reset      CODE u8 | reason
//! ```

use crate::socks5::{Address, Reply, Socks5Error};
use crate::wire::{self, put_name, put_reason, Reader, WireError};

/// The version byte that starts every frame.
pub const VERSION: u8 = 1;

/// The largest frame: one Noise transport message (65535 bytes) less its 16-byte tag.
pub const MAX_FRAME: usize = 65535 - 16;
/// The most payload bytes one [`Frame::Data`] can carry: [`MAX_FRAME`] less the two header bytes.
pub const MAX_DATA: usize = MAX_FRAME - DATA_HEADER_LEN;
/// Bytes [`Frame::data_header`] writes.
pub const DATA_HEADER_LEN: usize = 2;

/// Longest node or uplink name (64 bytes): plenty for `wlan0` or a hostname, and it keeps a
/// [`Frame::Load`] small.
pub use crate::wire::MAX_NAME;
pub use crate::wire::MAX_REASON;
/// Most uplinks one [`Frame::Load`] describes. A phone has two or three; 32 is generous and
/// bounds the frame to about 3.6 KiB.
pub const MAX_LOAD_UPLINKS: usize = 32;
/// Highest [`UplinkLoad::health`] value (3 = down).
pub const MAX_HEALTH: u8 = 3;

/// [`Frame::Hello`] flag: the sender wants to borrow the receiver's uplinks.
pub const FLAG_BORROW: u8 = 0x01;

const TYPE_HELLO: u8 = 0x01;
const TYPE_HEARTBEAT: u8 = 0x02;
const TYPE_LOAD: u8 = 0x03;
const TYPE_BYE: u8 = 0x04;
const TYPE_OPEN: u8 = 0x10;
const TYPE_OPEN_OK: u8 = 0x11;
const TYPE_OPEN_ERR: u8 = 0x12;
const TYPE_DATA: u8 = 0x13;
const TYPE_FIN: u8 = 0x14;
const TYPE_RESET: u8 = 0x15;

/// Why a plaintext is not a valid frame. Every one of these is fatal for the channel it
/// arrived on: the sender is buggy or speaks another version.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// The first byte is not [`VERSION`].
    #[error("unsupported peer protocol version {0}")]
    BadVersion(u8),
    /// The type byte names no frame.
    #[error("unknown peer frame type {0:#04x}")]
    UnknownType(u8),
    /// The frame ends before its body does.
    #[error("truncated peer frame")]
    Truncated,
    /// Bytes follow a complete frame.
    #[error("trailing bytes after peer frame")]
    Trailing,
    /// A node or uplink name that is empty (where not allowed), longer than 64 bytes, `.`,
    /// `..`, or has a byte outside `[A-Za-z0-9._-]`.
    #[error("invalid node or uplink name")]
    BadName,
    /// A reason that is not UTF-8 or is longer than 1024 bytes.
    #[error("invalid reason text")]
    BadString,
    /// A [`Frame::Load`] with more than 32 uplinks.
    #[error("too many uplinks in a load report")]
    TooMany,
    /// The address of an [`Frame::Open`] or [`Frame::OpenOk`] is malformed, or an Open's
    /// port is 0.
    #[error("invalid address: {0}")]
    BadAddress(Socks5Error),
    /// A [`Frame::Data`] with no bytes (a sender must not waste a message on it).
    #[error("empty data frame")]
    EmptyData,
    /// An uplink health above 3.
    #[error("invalid uplink health {0}")]
    BadHealth(u8),
    /// An [`Frame::OpenErr`] code that is not a SOCKS5 failure reply (1..=8).
    #[error("invalid open error code {0}")]
    BadCode(u8),
}

/// One peer protocol message. The control channel carries `Hello`, `Heartbeat`, `Load` and
/// `Bye`; each stream channel (one Noise connection per proxied stream) carries `Open`,
/// `OpenOk`, `OpenErr`, `Data`, `Fin` and `Reset`.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// First frame of a control channel, both ways. `flags` bit 0 = [`FLAG_BORROW`]; the
    /// other bits are carried as they are (reserved, sent as 0).
    Hello { node: String, flags: u8 },
    /// Liveness; the receiver echoes `seq` back.
    Heartbeat { seq: u32 },
    /// The lender's uplinks as it sees them now.
    Load { uplinks: Vec<UplinkLoad> },
    /// The sender is closing the control channel on purpose.
    Bye { reason: String },
    /// First frame of a stream channel: connect to `target` through `uplink` (empty = the
    /// lender picks).
    Open { uplink: String, target: Address },
    /// The lender connected; `bound` is its local address for the upstream connection and
    /// `remote` the address it connected to (after its own DNS), so the borrower can apply
    /// address rules to names the lender resolved.
    OpenOk { bound: Address, remote: Address },
    /// The lender could not connect; `code` is the SOCKS5 reply code to give the client.
    OpenErr { code: u8, reason: String },
    /// Stream bytes, never empty.
    Data(Vec<u8>),
    /// The sender will send no more `Data` (half-close of its direction).
    Fin,
    /// Abort the stream in both directions.
    Reset { code: u8, reason: String },
}

/// One uplink in a [`Frame::Load`].
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkLoad {
    pub name: String,
    /// 0 up, 1 unknown, 2 degraded, 3 down.
    pub health: u8,
    /// Bytes per second the lender estimates the uplink can carry.
    pub capacity: u64,
    /// Bytes per second received now.
    pub rate_rx: u64,
    /// Bytes per second sent now.
    pub rate_tx: u64,
    /// Open connections through it (all borrowers and local).
    pub open: u32,
    /// Round-trip time in microseconds; 0 = unknown.
    pub rtt_us: u32,
    /// Bytes left under the lender's cap for lending; `u64::MAX` = no cap.
    pub cap_left: u64,
    /// The lender's rate limit for lending, bytes per second; 0 = none.
    pub max_rate: u64,
}

/// Bytes of an encoded [`UplinkLoad`] after its name.
const UPLINK_LOAD_FIXED: usize = 1 + 8 + 8 + 8 + 4 + 4 + 8 + 8;

impl Frame {
    /// Appends the frame to `out`.
    ///
    /// Encoding cannot fail. Values that `decode` would refuse are written as they are (an
    /// invalid name, a health above 3, an empty `Data`) so the receiver refuses them, except
    /// that lengths are capped to what the wire can express: a name is cut to 64 bytes, a
    /// reason to 1024 bytes (at a character boundary) and a `Load` to its first 32 uplinks.
    /// Check names with [`is_valid_name`] when they are configured.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            Frame::Hello { node, flags } => {
                out.push(TYPE_HELLO);
                put_name(out, node);
                out.push(*flags);
            }
            Frame::Heartbeat { seq } => {
                out.push(TYPE_HEARTBEAT);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Frame::Load { uplinks } => {
                out.push(TYPE_LOAD);
                let uplinks = uplinks.get(..MAX_LOAD_UPLINKS).unwrap_or(uplinks);
                out.push(uplinks.len() as u8);
                for load in uplinks {
                    load.encode(out);
                }
            }
            Frame::Bye { reason } => {
                out.push(TYPE_BYE);
                put_reason(out, reason);
            }
            Frame::Open { uplink, target } => {
                out.push(TYPE_OPEN);
                put_name(out, uplink);
                target.encode(out);
            }
            Frame::OpenOk { bound, remote } => {
                out.push(TYPE_OPEN_OK);
                bound.encode(out);
                remote.encode(out);
            }
            Frame::OpenErr { code, reason } => {
                out.push(TYPE_OPEN_ERR);
                out.push(*code);
                put_reason(out, reason);
            }
            Frame::Data(bytes) => {
                out.push(TYPE_DATA);
                out.extend_from_slice(bytes);
            }
            Frame::Fin => out.push(TYPE_FIN),
            Frame::Reset { code, reason } => {
                out.push(TYPE_RESET);
                out.push(*code);
                put_reason(out, reason);
            }
        }
    }

    /// Writes the two header bytes of a `Data` frame (`[VERSION, 0x13]`); the caller then
    /// appends 1..=[`MAX_DATA`] payload bytes. Lets a sender read from a socket straight
    /// into the frame buffer.
    pub fn data_header(out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, TYPE_DATA]);
    }

    /// Decodes one whole frame; `buf` must hold exactly one frame.
    pub fn decode(buf: &[u8]) -> Result<Frame, PeerError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != VERSION {
            return Err(PeerError::BadVersion(version));
        }
        let frame = match r.u8()? {
            TYPE_HELLO => Frame::Hello {
                node: r.name(false)?,
                flags: r.u8()?,
            },
            TYPE_HEARTBEAT => Frame::Heartbeat { seq: r.u32()? },
            TYPE_LOAD => {
                let count = usize::from(r.u8()?);
                if count > MAX_LOAD_UPLINKS {
                    return Err(PeerError::TooMany);
                }
                let mut uplinks = Vec::with_capacity(count);
                for _ in 0..count {
                    uplinks.push(UplinkLoad::decode(&mut r)?);
                }
                Frame::Load { uplinks }
            }
            TYPE_BYE => Frame::Bye { reason: r.reason()? },
            TYPE_OPEN => {
                let uplink = r.name(true)?;
                let target = r.address()?;
                if target.port() == 0 {
                    return Err(PeerError::BadAddress(Socks5Error::ZeroPort));
                }
                Frame::Open { uplink, target }
            }
            TYPE_OPEN_OK => {
                let bound = r.address()?;
                let remote = r.address()?;
                Frame::OpenOk { bound, remote }
            }
            TYPE_OPEN_ERR => {
                let code = r.u8()?;
                if !matches!(Reply::try_from(code), Ok(reply) if reply != Reply::Succeeded) {
                    return Err(PeerError::BadCode(code));
                }
                Frame::OpenErr {
                    code,
                    reason: r.reason()?,
                }
            }
            TYPE_DATA => {
                let bytes = r.rest();
                if bytes.is_empty() {
                    return Err(PeerError::EmptyData);
                }
                Frame::Data(bytes.to_vec())
            }
            TYPE_FIN => Frame::Fin,
            TYPE_RESET => Frame::Reset {
                code: r.u8()?,
                reason: r.reason()?,
            },
            other => return Err(PeerError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }

    /// Zero-copy fast path for the data direction: `Ok(Some(bytes))` when `buf` is a valid
    /// `Data` frame (the bytes borrow `buf`), `Ok(None)` when it is a valid frame of another
    /// type (call [`Frame::decode`] for it), `Err` exactly when `decode` would fail.
    pub fn decode_data(buf: &[u8]) -> Result<Option<&[u8]>, PeerError> {
        match buf {
            [VERSION, TYPE_DATA] => Err(PeerError::EmptyData),
            [VERSION, TYPE_DATA, bytes @ ..] => Ok(Some(bytes)),
            _ => Frame::decode(buf).map(|_| None),
        }
    }
}

impl UplinkLoad {
    fn encode(&self, out: &mut Vec<u8>) {
        put_name(out, &self.name);
        out.push(self.health);
        out.extend_from_slice(&self.capacity.to_be_bytes());
        out.extend_from_slice(&self.rate_rx.to_be_bytes());
        out.extend_from_slice(&self.rate_tx.to_be_bytes());
        out.extend_from_slice(&self.open.to_be_bytes());
        out.extend_from_slice(&self.rtt_us.to_be_bytes());
        out.extend_from_slice(&self.cap_left.to_be_bytes());
        out.extend_from_slice(&self.max_rate.to_be_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<UplinkLoad, PeerError> {
        let name = r.name(false)?;
        // Check the fixed part's length first so a short frame is `Truncated` whatever field
        // it ends in.
        if r.buf.len() < UPLINK_LOAD_FIXED {
            return Err(PeerError::Truncated);
        }
        let health = r.u8()?;
        if health > MAX_HEALTH {
            return Err(PeerError::BadHealth(health));
        }
        Ok(UplinkLoad {
            name,
            health,
            capacity: r.u64()?,
            rate_rx: r.u64()?,
            rate_tx: r.u64()?,
            open: r.u32()?,
            rtt_us: r.u32()?,
            cap_left: r.u64()?,
            max_rate: r.u64()?,
        })
    }
}

/// Whether `name` is a valid node or uplink name: 1..=64 bytes of `[A-Za-z0-9._-]`, and
/// not `.` or `..` (names may end up in file names and URLs).
pub fn is_valid_name(name: &str) -> bool {
    wire::valid_name_bytes(name.as_bytes())
}

impl From<WireError> for PeerError {
    fn from(error: WireError) -> PeerError {
        match error {
            WireError::Truncated => PeerError::Truncated,
            WireError::Trailing => PeerError::Trailing,
            WireError::BadName => PeerError::BadName,
            WireError::BadString => PeerError::BadString,
            WireError::BadAddress(e) => PeerError::BadAddress(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    fn decode_ok(wire: &[u8]) -> Frame {
        let frame = Frame::decode(wire).unwrap_or_else(|e| panic!("{wire:02x?}: {e}"));
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(again, wire, "re-encoding {frame:?}");
        assert_prefixes_fail(wire);
        frame
    }

    /// Every strict prefix is an error (never a panic, never a frame). The exception is
    /// `Data`, whose body is "the rest of the message": a prefix of at least one payload byte
    /// is a shorter `Data` frame. That is sound because the Noise message around the frame
    /// is authenticated, so a frame can never arrive cut short.
    fn assert_prefixes_fail(wire: &[u8]) {
        let shortest_valid = match Frame::decode_data(wire) {
            Ok(Some(_)) => DATA_HEADER_LEN + 1,
            _ => wire.len(),
        };
        for cut in 0..shortest_valid {
            let result = Frame::decode(&wire[..cut]);
            assert!(result.is_err(), "prefix {cut} of {wire:02x?} decoded: {result:?}");
        }
    }

    // ------------------------------------------------------------ byte vectors

    #[test]
    fn hello_vector() {
        let wire = [0x01, 0x01, 0x05, b'p', b'h', b'o', b'n', b'e', 0x01];
        assert_eq!(
            decode_ok(&wire),
            Frame::Hello {
                node: "phone".into(),
                flags: FLAG_BORROW
            }
        );
    }

    #[test]
    fn heartbeat_vector() {
        let wire = [0x01, 0x02, 0xDE, 0xAD, 0xBE, 0xEF];
        assert_eq!(decode_ok(&wire), Frame::Heartbeat { seq: 0xDEAD_BEEF });
    }

    #[test]
    fn load_vector() {
        #[rustfmt::skip]
        let wire = [
            0x01, 0x03, 0x01,                                   // v1, Load, 1 uplink
            0x05, b'w', b'l', b'a', b'n', b'0',                 // name "wlan0"
            0x02,                                               // degraded
            0, 0, 0, 0, 0x00, 0x98, 0x96, 0x80,                 // capacity 10_000_000
            0, 0, 0, 0, 0x00, 0x0F, 0x42, 0x40,                 // rate_rx 1_000_000
            0, 0, 0, 0, 0x00, 0x01, 0x86, 0xA0,                 // rate_tx 100_000
            0, 0, 0, 7,                                         // open 7
            0, 0, 0x75, 0x30,                                   // rtt 30_000 us
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,     // no cap
            0, 0, 0, 0, 0, 0, 0, 0,                             // no rate limit
        ];
        let load = UplinkLoad {
            name: "wlan0".into(),
            health: 2,
            capacity: 10_000_000,
            rate_rx: 1_000_000,
            rate_tx: 100_000,
            open: 7,
            rtt_us: 30_000,
            cap_left: u64::MAX,
            max_rate: 0,
        };
        assert_eq!(decode_ok(&wire), Frame::Load { uplinks: vec![load] });
        assert_eq!(decode_ok(&[0x01, 0x03, 0x00]), Frame::Load { uplinks: vec![] });
    }

    #[test]
    fn bye_and_reset_vectors() {
        assert_eq!(
            decode_ok(&[0x01, 0x04, 0x00, 0x02, b'o', b'k']),
            Frame::Bye { reason: "ok".into() }
        );
        assert_eq!(
            decode_ok(&[0x01, 0x04, 0x00, 0x00]),
            Frame::Bye { reason: String::new() }
        );
        assert_eq!(
            decode_ok(&[0x01, 0x15, 0x05, 0x00, 0x01, b'x']),
            Frame::Reset {
                code: 5,
                reason: "x".into()
            }
        );
    }

    #[test]
    fn open_vectors() {
        // Open via "wwan0" to example.com:443.
        let mut wire = vec![0x01, 0x10, 0x05, b'w', b'w', b'a', b'n', b'0', 0x03, 0x0B];
        wire.extend_from_slice(b"example.com");
        wire.extend_from_slice(&[0x01, 0xBB]);
        assert_eq!(
            decode_ok(&wire),
            Frame::Open {
                uplink: "wwan0".into(),
                target: Address::Domain("example.com".into(), 443)
            }
        );
        // Empty uplink (lender picks), IPv4 target 10.0.0.1:80.
        assert_eq!(
            decode_ok(&[0x01, 0x10, 0x00, 0x01, 10, 0, 0, 1, 0x00, 0x50]),
            Frame::Open {
                uplink: String::new(),
                target: Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 80)))
            }
        );
        let mut ok = vec![0x01, 0x11, 0x04];
        ok.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ok.extend_from_slice(&[0x1F, 0x90]);
        ok.extend_from_slice(&[0x01, 192, 0, 2, 1, 0x00, 0x50]);
        assert_eq!(
            decode_ok(&ok),
            Frame::OpenOk {
                bound: Address::Ip(SocketAddr::from((Ipv6Addr::LOCALHOST, 8080))),
                remote: Address::Ip(SocketAddr::from(([192, 0, 2, 1], 80))),
            }
        );
        assert_eq!(
            decode_ok(&[0x01, 0x12, 0x05, 0x00, 0x07, b'r', b'e', b'f', b'u', b's', b'e', b'd']),
            Frame::OpenErr {
                code: 5,
                reason: "refused".into()
            }
        );
    }

    #[test]
    fn data_and_fin_vectors() {
        assert_eq!(decode_ok(&[0x01, 0x13, 0xAA, 0xBB]), Frame::Data(vec![0xAA, 0xBB]));
        assert_eq!(decode_ok(&[0x01, 0x14]), Frame::Fin);
        let mut header = Vec::new();
        Frame::data_header(&mut header);
        assert_eq!(header, [0x01, 0x13]);
        assert_eq!(header.len(), DATA_HEADER_LEN);
        header.extend_from_slice(b"hi");
        assert_eq!(Frame::decode_data(&header), Ok(Some(&b"hi"[..])));
        assert_eq!(Frame::decode_data(&[0x01, 0x14]), Ok(None));
        assert_eq!(Frame::decode_data(&[0x01, 0x13]), Err(PeerError::EmptyData));
        assert_eq!(Frame::decode_data(&[0x02, 0x13, 0]), Err(PeerError::BadVersion(2)));
    }

    #[test]
    fn malformed_vectors() {
        let cases: &[(&[u8], PeerError)] = &[
            (&[], PeerError::Truncated),
            (&[0x01], PeerError::Truncated),
            (&[0x02, 0x02, 0, 0, 0, 0], PeerError::BadVersion(2)),
            (&[0x01, 0x7F], PeerError::UnknownType(0x7F)),
            (&[0x01, 0x02, 0, 0, 0, 1, 0xFF], PeerError::Trailing),
            (&[0x01, 0x14, 0x00], PeerError::Trailing),
            (&[0x01, 0x13], PeerError::EmptyData),
            (&[0x01, 0x01, 0x00, 0x00], PeerError::BadName),
            (&[0x01, 0x01, 0x03, b'a', b'/', b'b', 0x00], PeerError::BadName),
            (&[0x01, 0x01, 0x02, b'.', b'.', 0x00], PeerError::BadName),
            (&[0x01, 0x01, 0x01, b' ', 0x00], PeerError::BadName),
            (&[0x01, 0x01, 0x02, 0xC3, 0xA9, 0x00], PeerError::BadName),
            (&[0x01, 0x03, 33], PeerError::TooMany),
            (&[0x01, 0x04, 0x00, 0x01, 0xFF], PeerError::BadString),
            (&[0x01, 0x04, 0x04, 0x01], PeerError::BadString),
            (&[0x01, 0x12, 0x00, 0x00, 0x00], PeerError::BadCode(0)),
            (&[0x01, 0x12, 0x09, 0x00, 0x00], PeerError::BadCode(9)),
            (
                &[0x01, 0x10, 0x00, 0x01, 1, 2, 3, 4, 0, 0],
                PeerError::BadAddress(Socks5Error::ZeroPort),
            ),
            (
                &[0x01, 0x10, 0x00, 0x02, 1, 2, 3, 4, 0, 1],
                PeerError::BadAddress(Socks5Error::UnsupportedAddressType(2)),
            ),
            (
                &[0x01, 0x11, 0x03, 0x00, 0, 1],
                PeerError::BadAddress(Socks5Error::BadDomain),
            ),
            (&[0x01, 0x11, 0x01, 1, 2, 3], PeerError::Truncated),
        ];
        for (wire, error) in cases {
            assert_eq!(Frame::decode(wire).as_ref(), Err(error), "{wire:02x?}");
        }
        // Health 4 in an otherwise valid load report.
        let mut load = Vec::new();
        Frame::Load {
            uplinks: vec![arb_load_fixed(4)],
        }
        .encode(&mut load);
        assert_eq!(Frame::decode(&load), Err(PeerError::BadHealth(4)));
        // A 1025-byte reason.
        let mut bye = vec![0x01, 0x04, 0x04, 0x01];
        bye.resize(bye.len() + 1025, b'a');
        assert_eq!(Frame::decode(&bye), Err(PeerError::BadString));
    }

    fn arb_load_fixed(health: u8) -> UplinkLoad {
        UplinkLoad {
            name: "eth0".into(),
            health,
            capacity: 1,
            rate_rx: 2,
            rate_tx: 3,
            open: 4,
            rtt_us: 5,
            cap_left: 6,
            max_rate: 7,
        }
    }

    #[test]
    fn encode_caps_lengths() {
        let mut wire = Vec::new();
        Frame::Bye {
            reason: "é".repeat(600),
        }
        .encode(&mut wire);
        let Frame::Bye { reason } = Frame::decode(&wire).unwrap() else {
            panic!("not a bye")
        };
        assert_eq!(reason, "é".repeat(512));
        wire.clear();
        Frame::Load {
            uplinks: vec![arb_load_fixed(0); 40],
        }
        .encode(&mut wire);
        assert_eq!(
            Frame::decode(&wire),
            Ok(Frame::Load {
                uplinks: vec![arb_load_fixed(0); 32]
            })
        );
    }

    #[test]
    fn name_rules() {
        assert!(is_valid_name("wlan0"));
        assert!(is_valid_name("rmnet_data0.v-2"));
        assert!(is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(&"a".repeat(65)));
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\0"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    // ------------------------------------------------------------ properties

    fn arb_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,64}".prop_filter("not . or ..", |n| n != "." && n != "..")
    }

    fn arb_reason() -> impl Strategy<Value = String> {
        // Any UTF-8 (including multi-byte and control characters) up to 1024 bytes.
        ".{0,300}".prop_map(|s| {
            let mut end = s.len().min(MAX_REASON);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        })
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| Address::Ip(SocketAddr::from((ip, port)))),
            (any::<[u8; 16]>(), 1..=u16::MAX)
                .prop_map(|(ip, port)| Address::Ip(SocketAddr::from((Ipv6Addr::from(ip), port)))),
            ("[a-z0-9.-]{1,255}", 1..=u16::MAX).prop_map(|(name, port)| Address::Domain(name, port)),
        ]
    }

    fn arb_load() -> impl Strategy<Value = UplinkLoad> {
        (
            arb_name(),
            0..=MAX_HEALTH,
            any::<[u64; 5]>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(name, health, [capacity, rate_rx, rate_tx, cap_left, max_rate], open, rtt_us)| UplinkLoad {
                    name,
                    health,
                    capacity,
                    rate_rx,
                    rate_tx,
                    open,
                    rtt_us,
                    cap_left,
                    max_rate,
                },
            )
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (arb_name(), any::<u8>()).prop_map(|(node, flags)| Frame::Hello { node, flags }),
            any::<u32>().prop_map(|seq| Frame::Heartbeat { seq }),
            proptest::collection::vec(arb_load(), 0..=MAX_LOAD_UPLINKS).prop_map(|uplinks| Frame::Load { uplinks }),
            arb_reason().prop_map(|reason| Frame::Bye { reason }),
            (prop_oneof![Just(String::new()), arb_name()], arb_address())
                .prop_map(|(uplink, target)| Frame::Open { uplink, target }),
            (arb_address(), arb_address()).prop_map(|(bound, remote)| Frame::OpenOk { bound, remote }),
            (1u8..=8, arb_reason()).prop_map(|(code, reason)| Frame::OpenErr { code, reason }),
            proptest::collection::vec(any::<u8>(), 1..2000).prop_map(Frame::Data),
            Just(Frame::Fin),
            (any::<u8>(), arb_reason()).prop_map(|(code, reason)| Frame::Reset { code, reason }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(frame in arb_frame()) {
            let mut wire = Vec::new();
            frame.encode(&mut wire);
            prop_assert!(wire.len() <= MAX_FRAME);
            prop_assert_eq!(Frame::decode(&wire), Ok(frame.clone()));
            match &frame {
                Frame::Data(bytes) => prop_assert_eq!(Frame::decode_data(&wire), Ok(Some(&bytes[..]))),
                _ => prop_assert_eq!(Frame::decode_data(&wire), Ok(None)),
            }
            assert_prefixes_fail(&wire);
            wire.push(0);
            // One more byte is trailing, except for Data where it is payload.
            if !matches!(frame, Frame::Data(_)) {
                prop_assert_eq!(Frame::decode(&wire), Err(PeerError::Trailing));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Frame::decode(&bytes);
            let _ = Frame::decode_data(&bytes);
        }

        /// Arbitrary bodies behind a valid header: whatever decodes re-encodes identically.
        #[test]
        fn decoded_frames_are_canonical(
            kind in prop_oneof![1u8..=4, 0x10u8..=0x15],
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut wire = vec![VERSION, kind];
            wire.extend_from_slice(&body);
            let decoded = Frame::decode(&wire);
            prop_assert_eq!(decoded.is_ok(), Frame::decode_data(&wire).is_ok());
            if let Ok(frame) = decoded {
                let mut again = Vec::new();
                frame.encode(&mut again);
                prop_assert_eq!(again, wire);
            }
        }
    }
}
