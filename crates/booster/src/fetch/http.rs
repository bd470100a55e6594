//! The HTTP/1.1 client side of a range fetch: URLs, one keep-alive connection, request heads,
//! response heads (decoded by [`proto::http::ResponseHead`]) and body reading (Content-Length,
//! chunked, or until close). Nothing here knows about pieces or sources.

use super::{connect::Stream, FetchError};
use proto::http::{BodyFraming, ResponseHead, MAX_HEAD};
use std::{fmt, io, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Read size when the connection buffer is refilled.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An `http://` or `https://` URL, split for requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Host without brackets (IPv6 literals are bare).
    pub host: String,
    pub port: u16,
    /// Origin-form request target: path and query, at least `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute `http`/`https` URL. The fragment is dropped; userinfo is refused.
    pub fn parse(s: &str) -> Result<Url, FetchError> {
        let bad = |why: &str| FetchError::Usage(format!("bad URL `{s}`: {why}"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("expected http://HOST/PATH"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(FetchError::Usage(format!(
                    "unsupported URL scheme `{other}` (http or https)"
                )))
            }
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user names in URLs are not supported"));
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after `]`")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    if p.is_empty() {
                        default_port
                    } else {
                        p.parse().map_err(|_| bad("bad port"))?
                    },
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("missing or invalid host"));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces in the path must be percent-encoded"));
        }
        let path = if path.starts_with('?') || path.is_empty() {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    pub fn default_port(&self) -> u16 {
        match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Same scheme, host and port: a kept-alive connection can serve both.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }

    /// Resolves a `Location` header against this URL (absolute, scheme-relative, absolute-path
    /// or relative-path references).
    pub fn join(&self, location: &str) -> Result<Url, FetchError> {
        let location = location.trim();
        if location.contains("://") {
            return Url::parse(location);
        }
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        let base = format!("{scheme}://{}", self.host_header());
        if location.starts_with('/') {
            return Url::parse(&format!("{base}{location}"));
        }
        let dir = self.path.split('?').next().unwrap_or("/");
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        Url::parse(&format!("{base}{dir}{location}"))
    }

    /// A file name for the download: the last path segment, percent-decoded, or `index.html`.
    pub fn file_name(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        let last = path.rsplit('/').next().unwrap_or("");
        let decoded = percent_decode(last);
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains(['/', '\0']) {
            "index.html".into()
        } else {
            decoded
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Content-Range: bytes FIRST-LAST/SIZE` as `(first, last inclusive, size)`.
pub fn content_range(head: &ResponseHead) -> Option<(u64, u64, u64)> {
    let v = std::str::from_utf8(head.header("content-range")?).ok()?.trim();
    let rest = v.strip_prefix("bytes")?.trim_start();
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let (a, b, size): (u64, u64, u64) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        size.trim().parse().ok()?,
    );
    (a <= b && b < size).then_some((a, b, size))
}

/// The size in `Content-Range: bytes */SIZE` (a 416 answer).
pub fn unsatisfied_size(head: &ResponseHead) -> Option<u64> {
    let v = std::str::from_utf8(head.header("content-range")?).ok()?.trim();
    v.strip_prefix("bytes")?
        .trim_start()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}

pub fn header_str(head: &ResponseHead, name: &str) -> Option<String> {
    head.header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.trim().to_string())
}

/// A request head for a `GET`.
pub fn get_request(
    url: &Url,
    range: Option<(u64, u64)>,
    if_range: Option<&str>,
    extra: &[(String, String)],
) -> Vec<u8> {
    let mut out = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: booster/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some((start, end)) = range {
        out.push_str(&format!("Range: bytes={start}-{}\r\n", end - 1));
        if let Some(v) = if_range {
            out.push_str(&format!("If-Range: {v}\r\n"));
        }
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Where a response body ends, and where the reader is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

impl Body {
    pub fn new(framing: BodyFraming) -> Body {
        match framing {
            BodyFraming::None | BodyFraming::Length(0) => Body::Done,
            BodyFraming::Length(n) => Body::Length(n),
            BodyFraming::Chunked => Body::ChunkSize,
            BodyFraming::UntilClose => Body::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Body::Done
    }
}

/// One connection to an origin (possibly through TLS or a proxy tunnel), with its read buffer.
pub struct Conn {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
    pos: usize,
    /// Which origin it talks to, for reuse.
    pub origin: Url,
    /// False once a response said `Connection: close`, was close-delimited, or was abandoned.
    pub reusable: bool,
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed {what}"))
}

impl Conn {
    pub fn new(io: Box<dyn Stream>, origin: Url) -> Conn {
        Conn {
            io,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            origin,
            reusable: true,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; Ok(0) at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.buf.len() + READ_CHUNK > self.buf.capacity() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let r = self.io.read(&mut self.buf[len..]).await;
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        r
    }

    pub async fn send(&mut self, head: &[u8]) -> io::Result<()> {
        self.io.write_all(head).await?;
        self.io.flush().await
    }

    /// Reads a final response head (skipping 1xx), bounded by `timeout`.
    pub async fn read_head(&mut self, timeout: Duration) -> Result<ResponseHead, FetchError> {
        let fut = async {
            loop {
                match ResponseHead::decode(self.buffered(), MAX_HEAD) {
                    Ok(Some((head, n))) => {
                        self.pos += n;
                        if (100..200).contains(&head.status) {
                            continue;
                        }
                        if !head.keep_alive() {
                            self.reusable = false;
                        }
                        return Ok(head);
                    }
                    Ok(None) => {
                        if self.fill().await? == 0 {
                            return Err(FetchError::Io(eof("before the response head")));
                        }
                    }
                    Err(e) => return Err(FetchError::Protocol(format!("bad response head: {e}"))),
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| FetchError::Timeout("response head"))?
    }

    /// The body of a response to a `GET`.
    pub fn body_of(&mut self, head: &ResponseHead) -> Result<Body, FetchError> {
        let framing = head
            .body_framing("GET")
            .map_err(|e| FetchError::Protocol(format!("bad body framing: {e}")))?;
        if framing == BodyFraming::UntilClose {
            self.reusable = false;
        }
        Ok(Body::new(framing))
    }

    /// Reads body bytes into `dst`; Ok(0) once the body is complete.
    pub async fn read_body(&mut self, body: &mut Body, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            match *body {
                Body::Done => return Ok(0),
                Body::Length(rem) | Body::ChunkData(rem) => {
                    let want = dst.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
                    let n = if !self.buffered().is_empty() {
                        let n = want.min(self.buffered().len());
                        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                        self.pos += n;
                        n
                    } else {
                        let n = self.io.read(&mut dst[..want]).await?;
                        if n == 0 {
                            return Err(eof("in the middle of a body"));
                        }
                        n
                    };
                    let left = rem - n as u64;
                    *body = match *body {
                        Body::Length(_) if left == 0 => Body::Done,
                        Body::Length(_) => Body::Length(left),
                        _ if left == 0 => Body::ChunkEnd,
                        _ => Body::ChunkData(left),
                    };
                    return Ok(n);
                }
                Body::UntilClose => {
                    if !self.buffered().is_empty() {
                        let n = dst.len().min(self.buffered().len());
                        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                        self.pos += n;
                        return Ok(n);
                    }
                    let n = self.io.read(dst).await?;
                    if n == 0 {
                        *body = Body::Done;
                    }
                    return Ok(n);
                }
                Body::ChunkSize => {
                    let line = self.read_line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                    *body = if size == 0 {
                        Body::Trailers
                    } else {
                        Body::ChunkData(size)
                    };
                }
                Body::ChunkEnd => {
                    if !self.read_line().await?.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
                    }
                    *body = Body::ChunkSize;
                }
                Body::Trailers => {
                    if self.read_line().await?.is_empty() {
                        *body = Body::Done;
                    }
                }
            }
        }
    }

    /// One CRLF- (or LF-) terminated line from the buffer, without its terminator.
    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let s = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(s);
            }
            if self.buffered().len() > MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk line too long"));
            }
            if self.fill().await? == 0 {
                return Err(eof("in a chunked body"));
            }
        }
    }

    /// Reads and drops the rest of a small body so the connection can be reused; gives up (and
    /// marks the connection not reusable) past `limit` bytes.
    pub async fn discard_body(&mut self, body: &mut Body, limit: u64) {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut seen = 0u64;
        while !body.is_done() {
            match tokio::time::timeout(Duration::from_secs(5), self.read_body(body, &mut scratch)).await {
                Ok(Ok(n)) if seen + (n as u64) <= limit => seen += n as u64,
                _ => {
                    self.reusable = false;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("http://Example.com:8080/a/b.iso?x=1#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.com", 8080, "/a/b.iso?x=1")
        );
        assert_eq!(u.file_name(), "b.iso");
        assert_eq!(u.join("c.bin").unwrap().to_string(), "http://example.com:8080/a/c.bin");
        assert_eq!(u.join("/z").unwrap().to_string(), "http://example.com:8080/z");
        assert_eq!(u.join("//other/q").unwrap().to_string(), "http://other/q");
        assert_eq!(u.join("https://s/x").unwrap().to_string(), "https://s/x");
        let v6 = Url::parse("https://[::1]:4443").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 4443, "/"));
        assert_eq!(v6.host_header(), "[::1]:4443");
        assert_eq!(v6.file_name(), "index.html");
        assert_eq!(Url::parse("http://h/a%20b").unwrap().file_name(), "a b");
        assert!(matches!(Url::parse("ftp://h/x"), Err(FetchError::Usage(_))));
        assert!(matches!(Url::parse("nonsense"), Err(FetchError::Usage(_))));
        assert!(matches!(Url::parse("http:///x"), Err(FetchError::Usage(_))));
    }

    #[test]
    fn content_ranges_parse() {
        let head = |v: &str| ResponseHead {
            version_minor: 1,
            status: 206,
            reason: String::new(),
            headers: vec![proto::http::Header::new("Content-Range", v)],
        };
        assert_eq!(content_range(&head("bytes 0-9/100")), Some((0, 9, 100)));
        assert_eq!(content_range(&head("bytes 5-4/100")), None);
        assert_eq!(content_range(&head("bytes 0-100/100")), None);
        assert_eq!(content_range(&head("bytes 0-9/*")), None);
        assert_eq!(unsatisfied_size(&head("bytes */0")), Some(0));
    }
}
