//! SOCKS5 codec: RFC 1928 (greeting, request, reply, UDP header) and RFC 1929
//! (username/password sub-negotiation).
//!
//! Each message has the same four methods where they apply: `decode`, `encode`, and for
//! addresses `encoded_len`. Decoders take the bytes received so far and return
//! `Ok(None)` when more are needed, `Ok(Some((msg, consumed)))` when a message is complete
//! (bytes after it are left to the caller) and `Err` when the bytes can never become a valid
//! message. An error is reported as soon as the offending byte arrives, so a client that
//! speaks another protocol is refused without waiting for more input.
//!
//! Wire layouts (RFC 1928 §3–§7, RFC 1929 §2):
//!
//! ```text
//! greeting     VER=5 | NMETHODS (1..=255) | METHODS...
//! selection    VER=5 | METHOD
//! user/pass    VER=1 | ULEN | UNAME | PLEN | PASSWD
//! auth status  VER=1 | STATUS (0 = success)
//! request      VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT
//! reply        VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT
//! udp header   RSV=0x0000 | FRAG | ATYP | DST.ADDR | DST.PORT | DATA
//! address      ATYP=1 IPv4(4) | ATYP=3 LEN(1..=255) DOMAIN | ATYP=4 IPv6(16); port big-endian
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Protocol version byte of every RFC 1928 message.
pub const VERSION: u8 = 5;
/// Method "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method "username/password" (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// Method selection answer "no acceptable methods"; the client must then close.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
/// Version byte of the RFC 1929 sub-negotiation (not the SOCKS version).
pub const AUTH_VERSION: u8 = 1;

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// Length fields on the wire are one byte, so domains and credentials are capped here.
const MAX_FIELD: usize = 255;

/// Why bytes could not be decoded as a SOCKS5 message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Socks5Error {
    /// The first byte is not 5 (often a client speaking HTTP or SOCKS4 on the port).
    #[error("unsupported SOCKS version {0}")]
    BadVersion(u8),
    /// A greeting that offers zero methods.
    #[error("greeting offers no authentication methods")]
    NoMethods,
    /// The RFC 1929 sub-negotiation version byte is not 1.
    #[error("unsupported username/password auth version {0}")]
    BadAuthVersion(u8),
    /// CMD is not CONNECT (1), BIND (2) or UDP ASSOCIATE (3).
    #[error("unsupported command {0:#04x}")]
    UnsupportedCommand(u8),
    /// ATYP is not IPv4 (1), domain (3) or IPv6 (4).
    #[error("unsupported address type {0:#04x}")]
    UnsupportedAddressType(u8),
    /// A domain that is empty, not UTF-8, or contains NUL, whitespace or control characters.
    #[error("invalid domain name")]
    BadDomain,
    /// Port 0 as the destination of a CONNECT.
    #[error("destination port 0")]
    ZeroPort,
    /// A reserved field that must be zero is not.
    #[error("reserved field is not zero")]
    ReservedNonZero,
    /// A reply code outside 0..=8.
    #[error("unknown reply code {0:#04x}")]
    UnknownReply(u8),
    /// A UDP datagram that ends before its header does.
    #[error("truncated UDP datagram header")]
    Truncated,
}

impl Socks5Error {
    /// The reply code the server should send for this error, when a request-stage reply is
    /// still possible. This is the one place the mapping lives.
    pub fn reply(&self) -> Reply {
        match self {
            Socks5Error::UnsupportedCommand(_) => Reply::CommandNotSupported,
            Socks5Error::UnsupportedAddressType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

/// The client's first message: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Decodes `VER NMETHODS METHODS...`; `usize` is the number of bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        check_version(version)?;
        let Some(&count) = buf.get(1) else {
            return Ok(None);
        };
        if count == 0 {
            return Err(Socks5Error::NoMethods);
        }
        let end = 2 + usize::from(count);
        let Some(methods) = buf.get(2..end) else {
            return Ok(None);
        };
        Ok(Some((
            Greeting {
                methods: methods.to_vec(),
            },
            end,
        )))
    }

    /// Encodes the greeting. Only the first 255 methods fit on the wire; the rest are dropped.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let methods = cap(&self.methods);
        out.extend_from_slice(&[VERSION, methods.len() as u8]);
        out.extend_from_slice(methods);
    }

    /// Whether the client offers `method`.
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }
}

/// The server's method selection: `[5, method]`.
pub fn encode_method_selection(method: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, method]);
}

/// Decodes the server's method selection `[5, method]` (client side and tests).
pub fn decode_method_selection(buf: &[u8]) -> Result<Option<(u8, usize)>, Socks5Error> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    check_version(version)?;
    Ok(buf.get(1).map(|&method| (method, 2)))
}

/// RFC 1929 username/password sub-negotiation (version byte 0x01).
///
/// Empty fields are accepted on decode (RFC 1929 asks for 1..=255 bytes, but some clients
/// send an empty password); the credential check refuses them anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    pub username: Vec<u8>,
    pub password: Vec<u8>,
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"***")
            .finish()
    }
}

impl UserPass {
    /// Decodes `VER=1 ULEN UNAME PLEN PASSWD`.
    pub fn decode(buf: &[u8]) -> Result<Option<(UserPass, usize)>, Socks5Error> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != AUTH_VERSION {
            return Err(Socks5Error::BadAuthVersion(version));
        }
        let Some((username, at)) = length_prefixed(buf, 1) else {
            return Ok(None);
        };
        let Some((password, end)) = length_prefixed(buf, at) else {
            return Ok(None);
        };
        let user_pass = UserPass {
            username: username.to_vec(),
            password: password.to_vec(),
        };
        Ok(Some((user_pass, end)))
    }

    /// Encodes the sub-negotiation. Fields longer than 255 bytes are cut to 255 (they cannot
    /// come out of `decode`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(AUTH_VERSION);
        for field in [&self.username, &self.password] {
            let field = cap(field);
            out.push(field.len() as u8);
            out.extend_from_slice(field);
        }
    }
}

/// The server's answer to [`UserPass`]: `[1, 0]` on success, `[1, 1]` on failure.
pub fn encode_auth_status(success: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&[AUTH_VERSION, if success { 0 } else { 1 }]);
}

/// Decodes the server's auth status (client side and tests): `true` means success.
pub fn decode_auth_status(buf: &[u8]) -> Result<Option<(bool, usize)>, Socks5Error> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != AUTH_VERSION {
        return Err(Socks5Error::BadAuthVersion(version));
    }
    Ok(buf.get(1).map(|&status| (status == 0, 2)))
}

/// A destination or bound address: an IP socket address or a domain name and port.
///
/// IPv6 addresses decode with flow info and scope id 0; those fields are not on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl Address {
    /// The unspecified IPv4 address with port 0, the usual `BND.ADDR` of a failure reply.
    pub const UNSPECIFIED: Address = Address::Ip(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));

    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(addr) => addr.port(),
            Address::Domain(_, port) => *port,
        }
    }

    /// The IP as text (IPv6 without brackets) or the domain.
    pub fn host(&self) -> String {
        match self {
            Address::Ip(addr) => addr.ip().to_string(),
            Address::Domain(domain, _) => domain.clone(),
        }
    }

    /// Decodes `ATYP DST.ADDR DST.PORT`.
    pub fn decode(buf: &[u8]) -> Result<Option<(Address, usize)>, Socks5Error> {
        let Some(&atyp) = buf.first() else {
            return Ok(None);
        };
        match atyp {
            ATYP_IPV4 => {
                let Some(raw) = buf.get(1..7) else {
                    return Ok(None);
                };
                let ip = Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]);
                let port = u16::from_be_bytes([raw[4], raw[5]]);
                Ok(Some((Address::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port))), 7)))
            }
            ATYP_IPV6 => {
                let Some(raw) = buf.get(1..19) else {
                    return Ok(None);
                };
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&raw[..16]);
                let port = u16::from_be_bytes([raw[16], raw[17]]);
                let addr = SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0);
                Ok(Some((Address::Ip(SocketAddr::V6(addr)), 19)))
            }
            ATYP_DOMAIN => {
                let Some(&len) = buf.get(1) else {
                    return Ok(None);
                };
                if len == 0 {
                    return Err(Socks5Error::BadDomain);
                }
                let end = 2 + usize::from(len) + 2;
                let Some(raw) = buf.get(2..end) else {
                    // Refuse a bad character before the whole name has arrived.
                    let name_end = buf.len().min(2 + usize::from(len));
                    validate_domain_prefix(buf.get(2..name_end).unwrap_or_default())?;
                    return Ok(None);
                };
                let (name, port) = raw.split_at(usize::from(len));
                let domain = parse_domain(name)?;
                let port = u16::from_be_bytes([port[0], port[1]]);
                Ok(Some((Address::Domain(domain, port), end)))
            }
            other => Err(Socks5Error::UnsupportedAddressType(other)),
        }
    }

    /// Encodes `ATYP ADDR PORT`. A domain longer than 255 bytes is cut to 255 (it cannot come
    /// out of `decode`, and the result will not decode back to the same name).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Address::Ip(SocketAddr::V4(addr)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&addr.ip().octets());
            }
            Address::Ip(SocketAddr::V6(addr)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&addr.ip().octets());
            }
            Address::Domain(domain, _) => {
                let name = cap(domain.as_bytes());
                out.extend_from_slice(&[ATYP_DOMAIN, name.len() as u8]);
                out.extend_from_slice(name);
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }

    /// The number of bytes [`Address::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Address::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Address::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Address::Domain(domain, _) => 1 + 1 + domain.len().min(MAX_FIELD) + 2,
        }
    }
}

impl fmt::Display for Address {
    /// `1.2.3.4:80`, `[::1]:80`, `example.com:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(addr) => write!(f, "{addr}"),
            Address::Domain(domain, port) => write!(f, "{domain}:{port}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Ip(addr)
    }
}

/// The request's CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    pub fn to_u8(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
        }
    }

    pub fn from_u8(byte: u8) -> Result<Command, Socks5Error> {
        match byte {
            1 => Ok(Command::Connect),
            2 => Ok(Command::Bind),
            3 => Ok(Command::UdpAssociate),
            other => Err(Socks5Error::UnsupportedCommand(other)),
        }
    }
}

/// The client's request after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub addr: Address,
}

impl Request {
    /// Decodes `VER CMD RSV ATYP DST.ADDR DST.PORT`. Port 0 is refused for CONNECT only: a
    /// UDP ASSOCIATE commonly announces `0.0.0.0:0`, and BIND's address is advisory.
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        check_version(version)?;
        let Some(&cmd) = buf.get(1) else {
            return Ok(None);
        };
        let command = Command::from_u8(cmd)?;
        let Some(&reserved) = buf.get(2) else {
            return Ok(None);
        };
        if reserved != 0 {
            return Err(Socks5Error::ReservedNonZero);
        }
        let Some((addr, len)) = Address::decode(buf.get(3..).unwrap_or_default())? else {
            return Ok(None);
        };
        if command == Command::Connect && addr.port() == 0 {
            return Err(Socks5Error::ZeroPort);
        }
        Ok(Some((Request { command, addr }, 3 + len)))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command.to_u8(), 0]);
        self.addr.encode(out);
    }
}

/// The server's REP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

impl TryFrom<u8> for Reply {
    type Error = Socks5Error;

    fn try_from(code: u8) -> Result<Reply, Socks5Error> {
        Ok(match code {
            0 => Reply::Succeeded,
            1 => Reply::GeneralFailure,
            2 => Reply::NotAllowed,
            3 => Reply::NetworkUnreachable,
            4 => Reply::HostUnreachable,
            5 => Reply::ConnectionRefused,
            6 => Reply::TtlExpired,
            7 => Reply::CommandNotSupported,
            8 => Reply::AddressTypeNotSupported,
            other => return Err(Socks5Error::UnknownReply(other)),
        })
    }
}

/// Encodes `VER REP RSV ATYP BND.ADDR BND.PORT`.
pub fn encode_reply(reply: Reply, bound: &Address, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, reply as u8, 0]);
    bound.encode(out);
}

/// Decodes a reply (client side and tests). An unknown REP code is an error.
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, Address, usize)>, Socks5Error> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    check_version(version)?;
    let Some(&code) = buf.get(1) else {
        return Ok(None);
    };
    let reply = Reply::try_from(code)?;
    let Some(&reserved) = buf.get(2) else {
        return Ok(None);
    };
    if reserved != 0 {
        return Err(Socks5Error::ReservedNonZero);
    }
    let Some((addr, len)) = Address::decode(buf.get(3..).unwrap_or_default())? else {
        return Ok(None);
    };
    Ok(Some((reply, addr, 3 + len)))
}

/// UDP request header (RFC 1928 §7): RSV(2)=0, FRAG, ATYP, DST.ADDR, DST.PORT.
///
/// `frag` is reported, not judged: a relay that does not reassemble drops datagrams whose
/// `frag != 0`, as RFC 1928 allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub addr: Address,
}

impl UdpHeader {
    /// A datagram is complete or malformed, never "need more": returns (header, payload offset).
    pub fn decode(datagram: &[u8]) -> Result<(UdpHeader, usize), Socks5Error> {
        let Some(&[rsv0, rsv1, frag]) = datagram.first_chunk::<3>() else {
            return Err(Socks5Error::Truncated);
        };
        if rsv0 != 0 || rsv1 != 0 {
            return Err(Socks5Error::ReservedNonZero);
        }
        match Address::decode(datagram.get(3..).unwrap_or_default())? {
            Some((addr, len)) => Ok((UdpHeader { frag, addr }, 3 + len)),
            None => Err(Socks5Error::Truncated),
        }
    }

    /// Encodes the header only; the caller appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, self.frag]);
        self.addr.encode(out);
    }
}

fn check_version(version: u8) -> Result<(), Socks5Error> {
    if version == VERSION {
        Ok(())
    } else {
        Err(Socks5Error::BadVersion(version))
    }
}

/// The first 255 bytes: what a one-byte length can describe.
fn cap(bytes: &[u8]) -> &[u8] {
    bytes.get(..MAX_FIELD).unwrap_or(bytes)
}

/// Reads `LEN BYTES` starting at `at`; returns the bytes and the offset after them.
fn length_prefixed(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*buf.get(at)?);
    let end = at + 1 + len;
    Some((buf.get(at + 1..end)?, end))
}

fn is_bad_domain_char(c: char) -> bool {
    c.is_control() || c.is_whitespace()
}

fn parse_domain(name: &[u8]) -> Result<String, Socks5Error> {
    let name = std::str::from_utf8(name).map_err(|_| Socks5Error::BadDomain)?;
    if name.is_empty() || name.chars().any(is_bad_domain_char) {
        return Err(Socks5Error::BadDomain);
    }
    Ok(name.to_owned())
}

/// Checks the part of a domain received so far. A UTF-8 sequence cut at the end is not
/// judged yet; everything before it is.
fn validate_domain_prefix(prefix: &[u8]) -> Result<(), Socks5Error> {
    let valid = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        Err(err) if err.error_len().is_none() => {
            // Only an incomplete sequence at the end: the valid part is whole characters.
            std::str::from_utf8(prefix.get(..err.valid_up_to()).unwrap_or_default())
                .map_err(|_| Socks5Error::BadDomain)?
        }
        Err(_) => return Err(Socks5Error::BadDomain),
    };
    if valid.chars().any(is_bad_domain_char) {
        return Err(Socks5Error::BadDomain);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Property tests; the RFC byte vectors live in `tests/vectors.rs`.
    use super::*;
    use proptest::prelude::*;

    fn arb_domain() -> impl Strategy<Value = String> {
        // Printable, no whitespace, includes multi-byte UTF-8; 1..=255 bytes after trimming.
        "[a-zA-Z0-9.\\-_é字]{1,120}".prop_map(|name| {
            let mut end = name.len().min(MAX_FIELD);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name[..end].to_owned()
        })
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Address::Ip(SocketAddr::from((ip, port)))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| Address::Ip(SocketAddr::from((Ipv6Addr::from(ip), port)))),
            (arb_domain(), any::<u16>()).prop_map(|(name, port)| Address::Domain(name, port)),
        ]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![Just(Command::Connect), Just(Command::Bind), Just(Command::UdpAssociate)]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        (0u8..=8).prop_map(|code| Reply::try_from(code).expect("0..=8 are known codes"))
    }

    /// Every strict prefix decodes to `None`, the full message to `Some` consuming it all,
    /// and trailing bytes are left alone.
    fn assert_split_independent<T: Clone + PartialEq + fmt::Debug>(
        wire: &[u8],
        expected: &T,
        decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, Socks5Error>,
    ) {
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(decode(wire), Ok(Some((expected.clone(), wire.len()))));
        let mut longer = wire.to_vec();
        longer.extend_from_slice(b"trailing");
        assert_eq!(decode(&longer), Ok(Some((expected.clone(), wire.len()))));
    }

    proptest! {
        #[test]
        fn greeting_round_trip(methods in proptest::collection::vec(any::<u8>(), 1..=255)) {
            let greeting = Greeting { methods };
            let mut wire = Vec::new();
            greeting.encode(&mut wire);
            assert_split_independent(&wire, &greeting, Greeting::decode);
        }

        #[test]
        fn user_pass_round_trip(
            username in proptest::collection::vec(any::<u8>(), 0..=255),
            password in proptest::collection::vec(any::<u8>(), 0..=255),
        ) {
            let auth = UserPass { username, password };
            let mut wire = Vec::new();
            auth.encode(&mut wire);
            assert_split_independent(&wire, &auth, UserPass::decode);
        }

        #[test]
        fn address_round_trip(addr in arb_address()) {
            let mut wire = Vec::new();
            addr.encode(&mut wire);
            prop_assert_eq!(wire.len(), addr.encoded_len());
            assert_split_independent(&wire, &addr, Address::decode);
        }

        #[test]
        fn request_round_trip(command in arb_command(), addr in arb_address()) {
            prop_assume!(command != Command::Connect || addr.port() != 0);
            let request = Request { command, addr };
            let mut wire = Vec::new();
            request.encode(&mut wire);
            assert_split_independent(&wire, &request, Request::decode);
        }

        #[test]
        fn reply_round_trip(reply in arb_reply(), addr in arb_address()) {
            let mut wire = Vec::new();
            encode_reply(reply, &addr, &mut wire);
            for cut in 0..wire.len() {
                prop_assert_eq!(decode_reply(&wire[..cut]), Ok(None));
            }
            prop_assert_eq!(decode_reply(&wire), Ok(Some((reply, addr, wire.len()))));
        }

        #[test]
        fn udp_header_round_trip(
            frag in any::<u8>(),
            addr in arb_address(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = UdpHeader { frag, addr };
            let mut wire = Vec::new();
            header.encode(&mut wire);
            let header_len = wire.len();
            wire.extend_from_slice(&payload);
            prop_assert_eq!(UdpHeader::decode(&wire), Ok((header, header_len)));
            for cut in 0..header_len {
                prop_assert!(UdpHeader::decode(&wire[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Greeting::decode(&bytes);
            let _ = UserPass::decode(&bytes);
            let _ = Address::decode(&bytes);
            let _ = Request::decode(&bytes);
            let _ = decode_reply(&bytes);
            let _ = decode_method_selection(&bytes);
            let _ = decode_auth_status(&bytes);
            let _ = UdpHeader::decode(&bytes);
        }

        /// Whatever decodes re-encodes to the same bytes it consumed.
        #[test]
        fn decoded_requests_reencode_identically(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            atyp in prop_oneof![Just(1u8), Just(3), Just(4)],
            cmd in 1u8..=3,
        ) {
            let mut wire = vec![VERSION, cmd, 0, atyp];
            wire.extend_from_slice(&bytes);
            if let Ok(Some((request, len))) = Request::decode(&wire) {
                let mut again = Vec::new();
                request.encode(&mut again);
                prop_assert_eq!(&again[..], &wire[..len]);
            }
        }
    }

    #[test]
    fn user_pass_debug_masks_password() {
        let auth = UserPass {
            username: b"alice".to_vec(),
            password: b"hunter2".to_vec(),
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("alice") && shown.contains("***"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn error_reply_mapping() {
        assert_eq!(Socks5Error::UnsupportedCommand(9).reply(), Reply::CommandNotSupported);
        assert_eq!(
            Socks5Error::UnsupportedAddressType(2).reply(),
            Reply::AddressTypeNotSupported
        );
        assert_eq!(Socks5Error::BadDomain.reply(), Reply::GeneralFailure);
        assert_eq!(Socks5Error::ZeroPort.reply(), Reply::GeneralFailure);
    }

    #[test]
    fn domain_prefix_is_judged_early() {
        // A NUL in the third byte of a 20-byte name is refused before the rest arrives.
        assert_eq!(Address::decode(&[3, 20, b'a', b'b', 0]), Err(Socks5Error::BadDomain));
        // A multi-byte character cut at the end of the buffer is not judged yet.
        let cut = "é".as_bytes();
        assert_eq!(Address::decode(&[3, 20, b'a', cut[0]]), Ok(None));
        // The first port byte is not mistaken for part of the name.
        assert_eq!(Address::decode(&[3, 1, b'a', 0]), Ok(None));
    }
}
