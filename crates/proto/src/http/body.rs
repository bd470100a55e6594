//! Where a message body ends (RFC 9112 §6, §7.1), tracked without buffering: the proxy
//! forwards body bytes unchanged, and only needs to know how many belong to this message.
//!
//! The chunked parser is a byte-level state machine, so input split anywhere (one byte at a
//! time included) gives the same answer as input fed whole. It keeps a few integers of
//! state and bounds every line it has to scan.

use super::HttpError;

/// Longest chunk-size line (size, extensions, CRLF) accepted. Real extensions are rare and
/// short; the bound stops a peer from making us scan an endless line.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section accepted, the same budget as a head.
pub const MAX_TRAILERS: usize = super::MAX_HEAD;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`; ends after the last-chunk and trailers.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Sans-IO tracker of where a body ends, for forwarding bodies byte-for-byte without
/// re-encoding.
#[derive(Debug, Clone)]
pub struct BodyTracker {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    UntilClose,
    Chunked(Chunk),
    Done,
    /// After an error every further feed fails too: a broken stream never resynchronises.
    Failed(&'static str),
}

/// Position inside a chunked body. `line` counts bytes of the current chunk-size line,
/// `trailers` bytes of the trailer section so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex chunk size.
    Size {
        size: u64,
        digits: usize,
        line: usize,
    },
    /// After the size: optional whitespace, then `;` extensions, until CR.
    Extension {
        size: u64,
        semicolon: bool,
        line: usize,
    },
    /// CR of the chunk-size line seen, LF expected.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart {
        trailers: usize,
    },
    TrailerName {
        trailers: usize,
    },
    TrailerValue {
        trailers: usize,
    },
    TrailerLf {
        trailers: usize,
    },
    /// CR of the final empty line seen, LF expected.
    EndLf,
}

impl BodyTracker {
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(len) => State::Length(len),
            BodyFraming::Chunked => State::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                line: 0,
            }),
            BodyFraming::UntilClose => State::UntilClose,
        };
        BodyTracker { state }
    }

    /// Feed bytes that follow the head. Returns how many of them belong to the body (the
    /// rest, if any, belongs to the next message).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, HttpError> {
        match self.state {
            State::Done => Ok(0),
            State::Failed(reason) => Err(HttpError::BadChunk(reason)),
            State::UntilClose => Ok(buf.len()),
            State::Length(remaining) => {
                let taken = take(remaining, buf.len());
                let left = remaining - taken as u64;
                self.state = if left == 0 { State::Done } else { State::Length(left) };
                Ok(taken)
            }
            State::Chunked(chunk) => match feed_chunked(chunk, buf) {
                Ok((Some(chunk), consumed)) => {
                    self.state = State::Chunked(chunk);
                    Ok(consumed)
                }
                Ok((None, consumed)) => {
                    self.state = State::Done;
                    Ok(consumed)
                }
                Err(reason) => {
                    self.state = State::Failed(reason);
                    Err(HttpError::BadChunk(reason))
                }
            },
        }
    }

    /// Whether the whole body has been seen. `UntilClose` is never done.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// `min(remaining, available)` without truncating a u64 on 32-bit targets.
fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |remaining| remaining.min(available))
}

/// Runs the chunked state machine over `buf`. Returns the next state (`None` when the body
/// ended) and how many bytes were consumed.
fn feed_chunked(mut chunk: Chunk, buf: &[u8]) -> Result<(Option<Chunk>, usize), &'static str> {
    let mut at = 0;
    while at < buf.len() {
        if let Chunk::Data { remaining } = chunk {
            let taken = take(remaining, buf.len() - at);
            at += taken;
            let left = remaining - taken as u64;
            chunk = if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data { remaining: left }
            };
            continue;
        }
        let byte = buf[at];
        at += 1;
        match step(chunk, byte)? {
            Some(next) => chunk = next,
            None => return Ok((None, at)),
        }
    }
    Ok((Some(chunk), at))
}

/// One byte of framing (everything but chunk data). `None` means the body just ended.
fn step(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, &'static str> {
    let next = match chunk {
        Chunk::Size { size, digits, line } => {
            let line = bump_line(line)?;
            if let Some(digit) = hex_value(byte) {
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                    .ok_or("chunk size overflows u64")?;
                Chunk::Size {
                    size,
                    digits: digits + 1,
                    line,
                }
            } else if digits == 0 {
                return Err("missing chunk size");
            } else if byte == b'\r' {
                Chunk::SizeLf { size }
            } else if byte == b';' || is_blank(byte) {
                Chunk::Extension {
                    size,
                    semicolon: byte == b';',
                    line,
                }
            } else {
                return Err("invalid chunk size");
            }
        }
        Chunk::Extension { size, semicolon, line } => {
            let line = bump_line(line)?;
            match byte {
                b'\r' => Chunk::SizeLf { size },
                b';' => Chunk::Extension {
                    size,
                    semicolon: true,
                    line,
                },
                _ if is_blank(byte) => Chunk::Extension { size, semicolon, line },
                _ if !semicolon => return Err("junk after chunk size"),
                _ if is_field_byte(byte) => Chunk::Extension { size, semicolon, line },
                _ => return Err("invalid byte in chunk extension"),
            }
        }
        Chunk::SizeLf { size } => {
            expect(byte, b'\n')?;
            if size == 0 {
                Chunk::TrailerStart { trailers: 0 }
            } else {
                Chunk::Data { remaining: size }
            }
        }
        Chunk::Data { .. } => return Err("internal: data is consumed in bulk"),
        Chunk::DataCr => {
            expect(byte, b'\r')?;
            Chunk::DataLf
        }
        Chunk::DataLf => {
            expect(byte, b'\n')?;
            Chunk::Size {
                size: 0,
                digits: 0,
                line: 0,
            }
        }
        Chunk::TrailerStart { trailers } => {
            if byte == b'\r' {
                Chunk::EndLf
            } else if is_token(byte) {
                Chunk::TrailerName {
                    trailers: bump_trailers(trailers)?,
                }
            } else {
                // Includes a leading SP/HTAB: obs-fold is refused here as in heads.
                return Err("invalid trailer field");
            }
        }
        Chunk::TrailerName { trailers } => {
            let trailers = bump_trailers(trailers)?;
            match byte {
                b':' => Chunk::TrailerValue { trailers },
                _ if is_token(byte) => Chunk::TrailerName { trailers },
                _ => return Err("invalid trailer field name"),
            }
        }
        Chunk::TrailerValue { trailers } => {
            let trailers = bump_trailers(trailers)?;
            match byte {
                b'\r' => Chunk::TrailerLf { trailers },
                _ if is_field_byte(byte) => Chunk::TrailerValue { trailers },
                _ => return Err("invalid trailer field value"),
            }
        }
        Chunk::TrailerLf { trailers } => {
            expect(byte, b'\n')?;
            Chunk::TrailerStart {
                trailers: bump_trailers(trailers)?,
            }
        }
        Chunk::EndLf => {
            expect(byte, b'\n')?;
            return Ok(None);
        }
    };
    Ok(Some(next))
}

fn expect(byte: u8, wanted: u8) -> Result<(), &'static str> {
    if byte == wanted {
        Ok(())
    } else if wanted == b'\n' {
        Err("CR not followed by LF")
    } else {
        Err("chunk data not followed by CRLF")
    }
}

fn bump_line(line: usize) -> Result<usize, &'static str> {
    if line >= MAX_CHUNK_LINE {
        Err("chunk-size line too long")
    } else {
        Ok(line + 1)
    }
}

fn bump_trailers(trailers: usize) -> Result<usize, &'static str> {
    if trailers >= MAX_TRAILERS {
        Err("trailer section too large")
    } else {
        Ok(trailers + 1)
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// tchar (RFC 9110 §5.6.2).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Field content: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL or other controls.
fn is_field_byte(byte: u8) -> bool {
    is_blank(byte) || (0x21..=0x7E).contains(&byte) || byte >= 0x80
}
