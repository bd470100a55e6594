//! Bond frames: what a node and a relay say to each other on a path, one frame per Noise
//! transport message. Byte-by-byte tables are in `docs/protocol.md`.
//!
//! ```text
//! frame        VERSION=1 | TYPE | BODY            (integers big-endian)
//! address      ATYP | ADDR | PORT                 (as in SOCKS5)
//! reason       LEN u16 (0..=1024) | UTF-8
//!
//! path-level (never re-sent on another path)
//! 0x01 Hello     LINK [16] | PATH u32 | source           node → relay, first frame of a path
//!                source = LEN(1..=129) | [A-Za-z0-9._/-]{LEN}   (`eth0`, or `phone-1/rmnet0`
//!                for a peer's uplink)
//! 0x02 Welcome   FLAGS u8                                relay → node; bit 0: the link is new
//! 0x03 PathAck   COUNT u64                               frames received on this path so far
//! 0x04 Ping      NONCE u64
//! 0x05 Pong      NONCE u64
//!
//! stream-level (re-sent on another path when theirs dies)
//! 0x10 Open      STREAM u32 | MODE u8 (0 bandwidth, 1 redundant) | address (port ≠ 0)
//! 0x11 OpenOk    STREAM u32 | address(bound)
//! 0x12 OpenErr   STREAM u32 | CODE u8 (SOCKS5 reply 1..=8) | reason
//! 0x13 Data      STREAM u32 | OFFSET u64 | FLAGS u8 (bit 0: FIN) | BYTES (the rest)
//! 0x14 Window    STREAM u32 | MAX u64               the sender may send bytes below MAX
//! 0x15 Reset     STREAM u32 | CODE u8 | reason
//! 0x20 Datagram  FLOW u32 | ID u32 | address | BYTES (the rest; may be empty)
//! ```

use crate::socks5::{Address, Reply, Socks5Error};
use crate::wire::{put_reason, Reader, WireError};

/// The version byte that starts every frame.
pub const VERSION: u8 = 1;
/// The largest frame: one Noise transport message (65535 bytes) less its 16-byte tag.
pub const MAX_FRAME: usize = 65535 - 16;
/// Bytes of a `Data` frame before its payload.
pub const DATA_HEADER_LEN: usize = 2 + 4 + 8 + 1;
/// Most payload one `Data` frame carries.
pub const MAX_DATA: usize = MAX_FRAME - DATA_HEADER_LEN;
/// Bytes of the link id a node picks for each relay it bonds through.
pub const LINK_ID_LEN: usize = 16;

/// [`Frame::Welcome`] flag: the relay has no state for this link (first path, or the relay
/// restarted and every stream of the old link is gone).
pub const WELCOME_NEW: u8 = 0x01;
/// [`Frame::Data`] flag: the sender's direction ends after these bytes.
pub const DATA_FIN: u8 = 0x01;

const TYPE_HELLO: u8 = 0x01;
const TYPE_WELCOME: u8 = 0x02;
const TYPE_PATH_ACK: u8 = 0x03;
const TYPE_PING: u8 = 0x04;
const TYPE_PONG: u8 = 0x05;
const TYPE_OPEN: u8 = 0x10;
const TYPE_OPEN_OK: u8 = 0x11;
const TYPE_OPEN_ERR: u8 = 0x12;
const TYPE_DATA: u8 = 0x13;
const TYPE_WINDOW: u8 = 0x14;
const TYPE_RESET: u8 = 0x15;
const TYPE_DATAGRAM: u8 = 0x20;

/// How a bonded stream uses its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Each frame goes on the one path expected to deliver it first: the paths' rates add up.
    Bandwidth,
    /// Each frame goes on every path; the first copy to arrive is used.
    Redundant,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Bandwidth => 0,
            Mode::Redundant => 1,
        }
    }
}

/// Why a plaintext is not a valid bond frame. Each is fatal for the path it arrived on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported bond protocol version {0}")]
    BadVersion(u8),
    #[error("unknown bond frame type {0:#04x}")]
    UnknownType(u8),
    #[error("truncated bond frame")]
    Truncated,
    #[error("trailing bytes after bond frame")]
    Trailing,
    #[error("invalid source name")]
    BadName,
    #[error("invalid reason text")]
    BadString,
    #[error("invalid address: {0}")]
    BadAddress(Socks5Error),
    #[error("invalid stream mode {0}")]
    BadMode(u8),
    #[error("invalid open error code {0}")]
    BadCode(u8),
    /// A `Data` frame with neither bytes nor FIN, or whose bytes run past offset 2^64.
    #[error("invalid data frame")]
    BadData,
}

impl From<WireError> for FrameError {
    fn from(error: WireError) -> FrameError {
        match error {
            WireError::Truncated => FrameError::Truncated,
            WireError::Trailing => FrameError::Trailing,
            WireError::BadName => FrameError::BadName,
            WireError::BadString => FrameError::BadString,
            WireError::BadAddress(e) => FrameError::BadAddress(e),
        }
    }
}

/// One bond frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello {
        link: [u8; LINK_ID_LEN],
        path: u32,
        source: String,
    },
    Welcome {
        flags: u8,
    },
    PathAck {
        count: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Open {
        stream: u32,
        mode: Mode,
        target: Address,
    },
    OpenOk {
        stream: u32,
        bound: Address,
    },
    OpenErr {
        stream: u32,
        code: u8,
        reason: String,
    },
    Data {
        stream: u32,
        offset: u64,
        fin: bool,
        payload: Vec<u8>,
    },
    Window {
        stream: u32,
        max: u64,
    },
    Reset {
        stream: u32,
        code: u8,
        reason: String,
    },
    Datagram {
        flow: u32,
        id: u32,
        target: Address,
        payload: Vec<u8>,
    },
}

impl Frame {
    /// Appends the frame to `out`. Lengths are capped to what the wire can express (a name
    /// to 64 bytes, a reason to 1024); the caller keeps payloads within [`MAX_DATA`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            Frame::Hello { link, path, source } => {
                out.push(TYPE_HELLO);
                out.extend_from_slice(link);
                out.extend_from_slice(&path.to_be_bytes());
                put_source(out, source);
            }
            Frame::Welcome { flags } => out.extend_from_slice(&[TYPE_WELCOME, *flags]),
            Frame::PathAck { count } => put_u64_frame(out, TYPE_PATH_ACK, *count),
            Frame::Ping { nonce } => put_u64_frame(out, TYPE_PING, *nonce),
            Frame::Pong { nonce } => put_u64_frame(out, TYPE_PONG, *nonce),
            Frame::Open { stream, mode, target } => {
                put_stream(out, TYPE_OPEN, *stream);
                out.push(mode.to_u8());
                target.encode(out);
            }
            Frame::OpenOk { stream, bound } => {
                put_stream(out, TYPE_OPEN_OK, *stream);
                bound.encode(out);
            }
            Frame::OpenErr { stream, code, reason } => {
                put_stream(out, TYPE_OPEN_ERR, *stream);
                out.push(*code);
                put_reason(out, reason);
            }
            Frame::Data {
                stream,
                offset,
                fin,
                payload,
            } => {
                out.pop();
                Frame::data_header(out, *stream, *offset, *fin);
                out.extend_from_slice(payload);
            }
            Frame::Window { stream, max } => {
                put_stream(out, TYPE_WINDOW, *stream);
                out.extend_from_slice(&max.to_be_bytes());
            }
            Frame::Reset { stream, code, reason } => {
                put_stream(out, TYPE_RESET, *stream);
                out.push(*code);
                put_reason(out, reason);
            }
            Frame::Datagram {
                flow,
                id,
                target,
                payload,
            } => {
                put_stream(out, TYPE_DATAGRAM, *flow);
                out.extend_from_slice(&id.to_be_bytes());
                target.encode(out);
                out.extend_from_slice(payload);
            }
        }
    }

    /// Writes the [`DATA_HEADER_LEN`] header bytes of a `Data` frame; the caller appends the
    /// payload. Lets a sender copy stream bytes straight into the frame buffer.
    pub fn data_header(out: &mut Vec<u8>, stream: u32, offset: u64, fin: bool) {
        out.extend_from_slice(&[VERSION, TYPE_DATA]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.push(if fin { DATA_FIN } else { 0 });
    }

    /// Decodes one whole frame; `buf` must hold exactly one frame.
    pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FrameError::BadVersion(version));
        }
        let frame = match r.u8()? {
            TYPE_HELLO => Frame::Hello {
                link: r.array()?,
                path: r.u32()?,
                source: source(&mut r)?,
            },
            TYPE_WELCOME => Frame::Welcome { flags: r.u8()? },
            TYPE_PATH_ACK => Frame::PathAck { count: r.u64()? },
            TYPE_PING => Frame::Ping { nonce: r.u64()? },
            TYPE_PONG => Frame::Pong { nonce: r.u64()? },
            TYPE_OPEN => {
                let stream = r.u32()?;
                let mode = match r.u8()? {
                    0 => Mode::Bandwidth,
                    1 => Mode::Redundant,
                    other => return Err(FrameError::BadMode(other)),
                };
                let target = r.address()?;
                if target.port() == 0 {
                    return Err(FrameError::BadAddress(Socks5Error::ZeroPort));
                }
                Frame::Open { stream, mode, target }
            }
            TYPE_OPEN_OK => Frame::OpenOk {
                stream: r.u32()?,
                bound: r.address()?,
            },
            TYPE_OPEN_ERR => {
                let stream = r.u32()?;
                let code = r.u8()?;
                if !matches!(Reply::try_from(code), Ok(reply) if reply != Reply::Succeeded) {
                    return Err(FrameError::BadCode(code));
                }
                Frame::OpenErr {
                    stream,
                    code,
                    reason: r.reason()?,
                }
            }
            TYPE_DATA => {
                let stream = r.u32()?;
                let offset = r.u64()?;
                let flags = r.u8()?;
                let payload = r.rest();
                let fin = flags & DATA_FIN != 0;
                let fits = offset.checked_add(payload.len() as u64).is_some();
                if (payload.is_empty() && !fin) || !fits {
                    return Err(FrameError::BadData);
                }
                Frame::Data {
                    stream,
                    offset,
                    fin,
                    payload: payload.to_vec(),
                }
            }
            TYPE_WINDOW => Frame::Window {
                stream: r.u32()?,
                max: r.u64()?,
            },
            TYPE_RESET => Frame::Reset {
                stream: r.u32()?,
                code: r.u8()?,
                reason: r.reason()?,
            },
            TYPE_DATAGRAM => Frame::Datagram {
                flow: r.u32()?,
                id: r.u32()?,
                target: r.address()?,
                payload: r.rest().to_vec(),
            },
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }

    /// Whether this frame is about one path only, so it is never re-sent on another.
    pub fn is_path_level(&self) -> bool {
        matches!(
            self,
            Frame::Hello { .. }
                | Frame::Welcome { .. }
                | Frame::PathAck { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
        )
    }
}

/// Longest source name in a `Hello`: a node name, `/`, an uplink name.
pub const MAX_SOURCE: usize = 2 * crate::wire::MAX_NAME + 1;

fn valid_source(name: &[u8]) -> bool {
    (1..=MAX_SOURCE).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

fn put_source(out: &mut Vec<u8>, source: &str) {
    let name = source.as_bytes();
    let name = name.get(..MAX_SOURCE).unwrap_or(name);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

fn source(r: &mut Reader<'_>) -> Result<String, FrameError> {
    let len = usize::from(r.u8()?);
    let raw = r.take(len)?;
    if !valid_source(raw) {
        return Err(FrameError::BadName);
    }
    // Only ASCII bytes get here.
    String::from_utf8(raw.to_vec()).map_err(|_| FrameError::BadName)
}

fn put_u64_frame(out: &mut Vec<u8>, kind: u8, value: u64) {
    out.push(kind);
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_stream(out: &mut Vec<u8>, kind: u8, stream: u32) {
    out.push(kind);
    out.extend_from_slice(&stream.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn roundtrip(frame: Frame) -> Vec<u8> {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        assert_eq!(Frame::decode(&wire), Ok(frame), "{wire:02x?}");
        wire
    }

    fn target() -> Address {
        Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 1), 80)))
    }

    #[test]
    fn data_frame_bytes() {
        let wire = roundtrip(Frame::Data {
            stream: 7,
            offset: 0x0102,
            fin: true,
            payload: b"hi".to_vec(),
        });
        assert_eq!(
            wire,
            [1, 0x13, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 2, 1, b'h', b'i'],
            "VERSION TYPE STREAM OFFSET FLAGS BYTES"
        );
    }

    #[test]
    fn open_frame_bytes() {
        let wire = roundtrip(Frame::Open {
            stream: 1,
            mode: Mode::Redundant,
            target: target(),
        });
        assert_eq!(wire, [1, 0x10, 0, 0, 0, 1, 1, 1, 10, 99, 0, 1, 0, 80]);
    }

    #[test]
    fn hello_frame_bytes() {
        let wire = roundtrip(Frame::Hello {
            link: [0xab; 16],
            path: 3,
            source: "wlan0".into(),
        });
        assert_eq!(&wire[..2], [1, 0x01]);
        assert_eq!(&wire[2..18], [0xab; 16]);
        assert_eq!(&wire[18..], [0, 0, 0, 3, 5, b'w', b'l', b'a', b'n', b'0']);
    }

    /// The examples table of the Bond section in `docs/protocol.md`.
    #[test]
    fn documented_examples() {
        let hex = |s: &str| -> Vec<u8> { s.split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()).collect() };
        let https = Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 1), 443)));
        for (frame, bytes) in [
            (Frame::Welcome { flags: WELCOME_NEW }, "01 02 01"),
            (Frame::PathAck { count: 42 }, "01 03 00 00 00 00 00 00 00 2A"),
            (
                Frame::Open {
                    stream: 1,
                    mode: Mode::Redundant,
                    target: Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 1), 80))),
                },
                "01 10 00 00 00 01 01 01 0A 63 00 01 00 50",
            ),
            (
                Frame::Data {
                    stream: 7,
                    offset: 0x102,
                    fin: true,
                    payload: b"hi".to_vec(),
                },
                "01 13 00 00 00 07 00 00 00 00 00 00 01 02 01 68 69",
            ),
            (
                Frame::Window {
                    stream: 2,
                    max: 1 << 40,
                },
                "01 14 00 00 00 02 00 00 01 00 00 00 00 00",
            ),
            (
                Frame::Reset {
                    stream: 2,
                    code: 1,
                    reason: "x".into(),
                },
                "01 15 00 00 00 02 01 00 01 78",
            ),
            (
                Frame::Datagram {
                    flow: 1,
                    id: 2,
                    target: https,
                    payload: Vec::new(),
                },
                "01 20 00 00 00 01 00 00 00 02 01 0A 63 00 01 01 BB",
            ),
        ] {
            assert_eq!(roundtrip(frame), hex(bytes), "{bytes}");
        }
    }

    #[test]
    fn every_frame_type_roundtrips() {
        for frame in [
            Frame::Welcome { flags: WELCOME_NEW },
            Frame::PathAck { count: u64::MAX },
            Frame::Ping { nonce: 9 },
            Frame::Pong { nonce: 9 },
            Frame::OpenOk {
                stream: 2,
                bound: Address::Domain("relay.example".into(), 4886),
            },
            Frame::OpenErr {
                stream: 2,
                code: 5,
                reason: "refused".into(),
            },
            Frame::Window {
                stream: 2,
                max: 1 << 40,
            },
            Frame::Reset {
                stream: 2,
                code: 1,
                reason: String::new(),
            },
            Frame::Datagram {
                flow: 1,
                id: 2,
                target: target(),
                payload: Vec::new(),
            },
            Frame::Data {
                stream: 1,
                offset: 5,
                fin: true,
                payload: Vec::new(),
            },
        ] {
            roundtrip(frame);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(Frame::decode(&[2, 0x03]), Err(FrameError::BadVersion(2)));
        assert_eq!(Frame::decode(&[1, 0x7f]), Err(FrameError::UnknownType(0x7f)));
        assert_eq!(Frame::decode(&[1, 0x03, 0]), Err(FrameError::Truncated));
        assert_eq!(Frame::decode(&[1, 0x02, 0, 0]), Err(FrameError::Trailing));
        // Data with neither bytes nor FIN.
        let mut empty = Vec::new();
        Frame::data_header(&mut empty, 1, 0, false);
        assert_eq!(Frame::decode(&empty), Err(FrameError::BadData));
        // Data running past 2^64.
        let mut past = Vec::new();
        Frame::data_header(&mut past, 1, u64::MAX, false);
        past.push(0);
        assert_eq!(Frame::decode(&past), Err(FrameError::BadData));
        // Open to port 0, with a bad mode, OpenErr with "succeeded".
        assert!(matches!(
            Frame::decode(&[1, 0x10, 0, 0, 0, 1, 0, 1, 10, 0, 0, 1, 0, 0]),
            Err(FrameError::BadAddress(_))
        ));
        assert_eq!(
            Frame::decode(&[1, 0x10, 0, 0, 0, 1, 9, 1, 10, 0, 0, 1, 0, 80]),
            Err(FrameError::BadMode(9))
        );
        assert_eq!(
            Frame::decode(&[1, 0x12, 0, 0, 0, 1, 0, 0, 0]),
            Err(FrameError::BadCode(0))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn data_roundtrips(stream: u32, offset in 0u64..u64::MAX / 2, fin: bool,
                           payload in proptest::collection::vec(any::<u8>(), 1..300)) {
            roundtrip(Frame::Data { stream, offset, fin, payload });
        }
    }

    #[test]
    fn a_peer_uplink_is_a_valid_source() {
        roundtrip(Frame::Hello {
            link: [1; 16],
            path: 1,
            source: "phone-1/rmnet0".into(),
        });
        let mut wire = Vec::new();
        Frame::Hello {
            link: [1; 16],
            path: 1,
            source: "bad name".into(),
        }
        .encode(&mut wire);
        assert_eq!(Frame::decode(&wire), Err(FrameError::BadName));
    }
}
