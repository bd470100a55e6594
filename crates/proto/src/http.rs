//! HTTP/1.x proxy heads and body framing (RFC 9110, RFC 9112), sans-IO.
//!
//! Reading order:
//! - [`RequestHead`] / [`ResponseHead`]: bounded head decoding (via `httparse`), re-encoding,
//!   and the proxy questions asked of a head: where does it go ([`RequestHead::proxy_target`]),
//!   how is its body framed (`body_framing`), does the connection stay open (`keep_alive`),
//!   and what goes upstream ([`RequestHead::to_origin_form`]).
//! - [`ProxyTarget`] (in `http/target.rs`): CONNECT authority-form and `http://` absolute-form.
//! - [`BodyTracker`] (in `http/body.rs`): finds where a body ends, so bodies are forwarded
//!   byte for byte and never re-encoded.
//!
//! Every decoder returns `Ok(None)` for "need more bytes" and `Err` for "malformed"; each
//! [`HttpError`] maps to the status a proxy answers with through [`HttpError::status`].
//! Framing ambiguities that enable request smuggling (Transfer-Encoding with Content-Length,
//! differing Content-Length values, Transfer-Encoding on HTTP/1.0, obs-fold) are errors.

mod body;
mod target;

pub use body::{BodyFraming, BodyTracker, MAX_CHUNK_LINE, MAX_TRAILERS};
pub use target::ProxyTarget;

/// Default head size limit: large enough for real browsers' cookies, small enough that a
/// slow client cannot make us buffer much per connection.
pub const MAX_HEAD: usize = 16 * 1024;
/// Header count limit; `httparse` needs a fixed array and 100 is far above what clients send.
pub const MAX_HEADERS: usize = 100;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the
/// proxy's own authentication headers and the legacy `Proxy-Connection`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that a `Connection` option can never remove: dropping them would change how the
/// next hop frames or routes the message (a request smuggling vector).
const NEVER_STRIPPED: &[&str] = &["content-length", "transfer-encoding", "host"];

/// One header field: a token name as received, and the raw value (may hold obs-text bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Why a head or body could not be decoded, or cannot be proxied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("message head exceeds the size limit")]
    TooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    /// Not CONNECT authority-form nor absolute-form, or a bad host or port.
    #[error("request target cannot be proxied")]
    BadTarget,
    /// Absolute-form with a scheme other than `http` (clients must CONNECT for https).
    #[error("unsupported URI scheme")]
    UnsupportedScheme,
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    /// Both Transfer-Encoding and Content-Length: the classic smuggling ambiguity.
    #[error("both Transfer-Encoding and Content-Length present")]
    ConflictingFraming,
    /// Transfer-Encoding that cannot frame a body: empty, chunked not last, chunked twice,
    /// or sent in an HTTP/1.0 message.
    #[error("invalid Transfer-Encoding")]
    BadTransferEncoding,
    /// A transfer coding other than `chunked` in a request.
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

impl HttpError {
    /// The status a proxy answers with. This is the one place the mapping lives.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::TooLarge | HttpError::TooManyHeaders => 431,
            HttpError::UnsupportedTransferEncoding => 501,
            _ => 400,
        }
    }
}

impl From<httparse::Error> for HttpError {
    fn from(err: httparse::Error) -> HttpError {
        match err {
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
            httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
            httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
            httparse::Error::Status => HttpError::Malformed("invalid status code"),
            httparse::Error::Token => HttpError::Malformed("invalid token"),
            httparse::Error::Version => HttpError::Malformed("unsupported HTTP version"),
        }
    }
}

/// The standard reason phrase, or `"Unknown"`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A request line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version_minor: u8,
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// Ok(None) = need more bytes; Err(TooLarge) once `buf` holds max_head bytes without a
    /// complete head. Bytes after the head (a body, a pipelined request) are not consumed.
    pub fn decode(buf: &[u8], max_head: usize) -> Result<Option<(RequestHead, usize)>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let Some(len) = complete(req.parse(limit(buf, max_head)), buf.len(), max_head)? else {
            return Ok(None);
        };
        let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version) else {
            return Err(HttpError::Malformed("incomplete request line"));
        };
        let head = RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            version_minor,
            headers: own_headers(req.headers),
        };
        Ok(Some((head, len)))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.");
        out.extend_from_slice(self.version_minor.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        encode_headers(&self.headers, out);
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// Where the proxy should connect: CONNECT's authority-form, or an `http://`
    /// absolute-form target for any other method. Origin-form, `*`, https:// and bad hosts or
    /// ports are errors (all answered with 400).
    pub fn proxy_target(&self) -> Result<ProxyTarget, HttpError> {
        if self.method == "CONNECT" {
            ProxyTarget::parse_connect(&self.target)
        } else {
            ProxyTarget::parse_absolute(&self.target)
        }
    }

    /// Request body framing (RFC 9112 §6.3): chunked, Content-Length, or no body at all.
    pub fn body_framing(&self) -> Result<BodyFraming, HttpError> {
        match framing_headers(&self.headers, self.version_minor)? {
            Framing::Chunked => Ok(BodyFraming::Chunked),
            // A request cannot be delimited by closing the connection.
            Framing::OtherCoding => Err(HttpError::BadTransferEncoding),
            // Framed fine, but a coding the next hop may not know: refuse it here.
            Framing::CodedThenChunked => Err(HttpError::UnsupportedTransferEncoding),
            Framing::Length(len) => Ok(BodyFraming::Length(len)),
            Framing::Absent => Ok(BodyFraming::None),
        }
    }

    /// HTTP/1.1: persistent unless `Connection: close`; HTTP/1.0: only with
    /// `Connection: keep-alive`. `Proxy-Connection` is honoured like `Connection`.
    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.headers, self.version_minor)
    }

    /// The request to send upstream: origin-form target, hop-by-hop headers removed
    /// (Connection and every header it names, except Content-Length, Transfer-Encoding and
    /// Host, which a Connection option must never remove; Proxy-Connection,
    /// Proxy-Authorization, Proxy-Authenticate, Keep-Alive, TE, Trailer, Upgrade), and Host
    /// set from the target. A received Host is replaced, as RFC 9112 §3.2.2 requires of a
    /// proxy receiving absolute-form. Version kept.
    pub fn to_origin_form(&self, target: &ProxyTarget) -> RequestHead {
        let named = connection_options(&self.headers, &["connection"]);
        let strip = |name: &str| {
            let listed = |list: &[&str]| list.iter().any(|h| h.eq_ignore_ascii_case(name));
            (listed(HOP_BY_HOP) || named.iter().any(|n| n.eq_ignore_ascii_case(name))) && !listed(NEVER_STRIPPED)
        };
        let host = Header::new("Host", target.host_header());
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        let mut host_written = false;
        for header in &self.headers {
            if header.name.eq_ignore_ascii_case("host") {
                if !host_written {
                    headers.push(host.clone());
                    host_written = true;
                }
            } else if !strip(&header.name) {
                headers.push(header.clone());
            }
        }
        if !host_written {
            headers.insert(0, host);
        }
        let request_target = match target {
            ProxyTarget::Absolute { origin_form, .. } => origin_form.clone(),
            ProxyTarget::Connect { .. } => self.target.clone(),
        };
        RequestHead {
            method: self.method.clone(),
            target: request_target,
            version_minor: self.version_minor,
            headers,
        }
    }
}

/// A status line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version_minor: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// Same contract as [`RequestHead::decode`]. obs-fold is refused (`httparse`'s default).
    pub fn decode(buf: &[u8], max_head: usize) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let Some(len) = complete(res.parse(limit(buf, max_head)), buf.len(), max_head)? else {
            return Ok(None);
        };
        let (Some(version_minor), Some(status)) = (res.version, res.code) else {
            return Err(HttpError::Malformed("incomplete status line"));
        };
        let head = ResponseHead {
            version_minor,
            status,
            reason: res.reason.unwrap_or_default().to_owned(),
            headers: own_headers(res.headers),
        };
        Ok(Some((head, len)))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.");
        out.extend_from_slice(self.version_minor.to_string().as_bytes());
        out.extend_from_slice(format!(" {:03} ", self.status).as_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        encode_headers(&self.headers, out);
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// RFC 9112 §6.3: HEAD, 1xx, 204, 304 and a 2xx to CONNECT → None; chunked;
    /// Content-Length; otherwise UntilClose. A Transfer-Encoding whose last coding is not
    /// chunked is also UntilClose. Transfer-Encoding with Content-Length is an error, so the
    /// proxy never forwards an ambiguous message.
    pub fn body_framing(&self, request_method: &str) -> Result<BodyFraming, HttpError> {
        let bodiless = request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
            || (request_method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&self.status));
        if bodiless {
            return Ok(BodyFraming::None);
        }
        match framing_headers(&self.headers, self.version_minor)? {
            Framing::Chunked => Ok(BodyFraming::Chunked),
            // A response may carry codings we do not know: we only forward the bytes.
            Framing::CodedThenChunked => Ok(BodyFraming::Chunked),
            Framing::OtherCoding => Ok(BodyFraming::UntilClose),
            Framing::Length(len) => Ok(BodyFraming::Length(len)),
            Framing::Absent => Ok(BodyFraming::UntilClose),
        }
    }

    /// Same rules as [`RequestHead::keep_alive`]. The caller must still close after an
    /// [`BodyFraming::UntilClose`] body.
    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.headers, self.version_minor)
    }
}

/// What the framing headers say, before request/response rules apply.
enum Framing {
    Absent,
    Length(u64),
    Chunked,
    /// Transfer-Encoding whose final coding is not chunked.
    OtherCoding,
    /// chunked last, but preceded by another coding (`gzip, chunked`).
    CodedThenChunked,
}

fn framing_headers(headers: &[Header], version_minor: u8) -> Result<Framing, HttpError> {
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let transfer_encoding = has("transfer-encoding");
    if transfer_encoding && has("content-length") {
        return Err(HttpError::ConflictingFraming);
    }
    if transfer_encoding {
        if version_minor == 0 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err(HttpError::BadTransferEncoding);
        }
        let codings = list_values(headers, "transfer-encoding")?;
        let chunked = codings.iter().filter(|c| c.eq_ignore_ascii_case("chunked")).count();
        return match codings.last() {
            None => Err(HttpError::BadTransferEncoding),
            Some(last) if !last.eq_ignore_ascii_case("chunked") => {
                if chunked > 0 {
                    Err(HttpError::BadTransferEncoding)
                } else {
                    Ok(Framing::OtherCoding)
                }
            }
            Some(_) if chunked > 1 => Err(HttpError::BadTransferEncoding),
            Some(_) if codings.len() > 1 => Ok(Framing::CodedThenChunked),
            Some(_) => Ok(Framing::Chunked),
        };
    }
    let lengths = list_values(headers, "content-length").map_err(|_| HttpError::BadContentLength)?;
    if lengths.is_empty() && has("content-length") {
        return Err(HttpError::BadContentLength);
    }
    let mut length = None;
    for value in lengths {
        let parsed = parse_decimal(value).ok_or(HttpError::BadContentLength)?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(HttpError::BadContentLength);
        }
        length = Some(parsed);
    }
    Ok(length.map_or(Framing::Absent, Framing::Length))
}

/// `1*DIGIT` as u64; no sign, no whitespace, no overflow.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Comma-separated elements of every header named `name`, trimmed. Empty elements are
/// skipped (RFC 9110 §5.6.1); non-UTF-8 values are malformed.
fn list_values<'a>(headers: &'a [Header], name: &str) -> Result<Vec<&'a str>, HttpError> {
    let mut values = Vec::new();
    for header in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let text = std::str::from_utf8(&header.value).map_err(|_| HttpError::Malformed("non-ASCII list header"))?;
        values.extend(
            text.split(',')
                .map(|v| v.trim_matches([' ', '\t']))
                .filter(|v| !v.is_empty()),
        );
    }
    Ok(values)
}

/// Connection options from the named headers; unreadable values contribute nothing.
fn connection_options<'a>(headers: &'a [Header], names: &[&str]) -> Vec<&'a str> {
    names
        .iter()
        .flat_map(|name| list_values(headers, name).unwrap_or_default())
        .collect()
}

fn keep_alive(headers: &[Header], version_minor: u8) -> bool {
    let options = connection_options(headers, &["connection", "proxy-connection"]);
    let has = |token: &str| options.iter().any(|o| o.eq_ignore_ascii_case(token));
    if has("close") {
        return false;
    }
    version_minor >= 1 || has("keep-alive")
}

fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

fn own_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed.iter().map(|h| Header::new(h.name, h.value)).collect()
}

fn encode_headers(headers: &[Header], out: &mut Vec<u8>) {
    for header in headers {
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// At most `max_head` bytes are ever parsed, so a huge buffer costs nothing extra.
fn limit(buf: &[u8], max_head: usize) -> &[u8] {
    buf.get(..max_head).unwrap_or(buf)
}

fn complete(parsed: httparse::Result<usize>, buffered: usize, max_head: usize) -> Result<Option<usize>, HttpError> {
    match parsed? {
        httparse::Status::Complete(len) => Ok(Some(len)),
        httparse::Status::Partial if buffered >= max_head => Err(HttpError::TooLarge),
        httparse::Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests;
