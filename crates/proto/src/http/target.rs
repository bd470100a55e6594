//! Request targets a proxy accepts (RFC 9112 §3.2): CONNECT's authority-form and
//! `http://` absolute-form. Hosts are checked strictly, since they are dialled.

use std::net::Ipv6Addr;

use super::HttpError;

const HTTP_DEFAULT_PORT: u16 = 80;
/// DNS names are at most 253 characters; a little slack costs nothing.
const MAX_HOST: usize = 255;

/// Where a proxied request goes. IPv6 hosts are stored without brackets (`::1`), so
/// `host.parse::<IpAddr>()` works; [`ProxyTarget::authority`] adds them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTarget {
    /// `CONNECT host:port` (authority-form; IPv6 as [::1]:443).
    Connect { host: String, port: u16 },
    /// `GET http://host[:port]/path?q` (absolute-form, scheme http only; default port 80).
    /// `origin_form` is the path and query, `/` when the URI has none; a fragment is dropped.
    Absolute {
        host: String,
        port: u16,
        origin_form: String,
    },
}

impl ProxyTarget {
    pub fn host(&self) -> &str {
        match self {
            ProxyTarget::Connect { host, .. } | ProxyTarget::Absolute { host, .. } => host,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            ProxyTarget::Connect { port, .. } | ProxyTarget::Absolute { port, .. } => *port,
        }
    }

    /// `host:port`, with IPv6 hosts in brackets.
    pub fn authority(&self) -> String {
        format!("{}:{}", bracketed(self.host()), self.port())
    }

    /// The Host header value for this target: the port is omitted when it is http's default.
    pub fn host_header(&self) -> String {
        match self {
            ProxyTarget::Absolute {
                host,
                port: HTTP_DEFAULT_PORT,
                ..
            } => bracketed(host),
            _ => self.authority(),
        }
    }

    /// Parses CONNECT's authority-form `host:port`; the port is required and nonzero.
    pub(super) fn parse_connect(target: &str) -> Result<ProxyTarget, HttpError> {
        let (host, port) = parse_authority(target, None)?;
        Ok(ProxyTarget::Connect { host, port })
    }

    /// Parses `http://authority[/path][?query][#fragment]`.
    pub(super) fn parse_absolute(target: &str) -> Result<ProxyTarget, HttpError> {
        let Some((scheme, rest)) = target.split_once("://") else {
            return Err(HttpError::BadTarget);
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(if is_scheme(scheme) {
                HttpError::UnsupportedScheme
            } else {
                HttpError::BadTarget
            });
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (host, port) = parse_authority(authority, Some(HTTP_DEFAULT_PORT))?;
        let tail = tail.split('#').next().unwrap_or_default();
        let origin_form = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        Ok(ProxyTarget::Absolute {
            host,
            port,
            origin_form,
        })
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `host[:port]` or `[v6][:port]`. Userinfo (`user@host`) is refused: RFC 9110 §4.2.4
/// deprecates it and it is a classic way to disguise a destination.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<(String, u16), HttpError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(HttpError::BadTarget)?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| HttpError::BadTarget)?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or(HttpError::BadTarget)?),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if !is_reg_name(host) {
            return Err(HttpError::BadTarget);
        }
        (host.to_owned(), port)
    };
    let port = match (port, default_port) {
        (Some(""), Some(default)) | (None, Some(default)) => default,
        (Some(text), _) => parse_port(text).ok_or(HttpError::BadTarget)?,
        (None, None) => return Err(HttpError::BadTarget),
    };
    Ok((host, port))
}

/// A DNS name or IPv4 literal: unreserved characters only, 1..=255 of them.
fn is_reg_name(host: &str) -> bool {
    (1..=MAX_HOST).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// 1..=5 digits, 1..=65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&port| port != 0)
}
