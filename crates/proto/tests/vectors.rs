//! Known byte vectors for the SOCKS5 and HTTP proxy codecs: RFC 1928/1929 examples, every
//! prefix of a valid message, malformed inputs with their error and reply code or status,
//! and HTTP smuggling cases.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proto::http::{
    self, BodyFraming, BodyTracker, Header, HttpError, ProxyTarget, RequestHead, ResponseHead, MAX_HEAD,
};
use proto::socks5::{self, Address, Command, Greeting, Reply, Request, Socks5Error, UdpHeader, UserPass};

/// Every strict prefix of `wire` needs more bytes; the whole of it decodes.
fn assert_prefixes_pending<T, E: std::fmt::Debug>(wire: &[u8], decode: impl Fn(&[u8]) -> Result<Option<T>, E>) {
    for cut in 0..wire.len() {
        let result = decode(&wire[..cut]);
        assert!(
            matches!(result, Ok(None)),
            "prefix {cut} of {wire:02x?}: {result:?}",
            result = result.err()
        );
    }
    assert!(matches!(decode(wire), Ok(Some(_))), "full {wire:02x?}");
}

fn v4(a: [u8; 4], port: u16) -> Address {
    Address::Ip(SocketAddr::from((Ipv4Addr::from(a), port)))
}

// ---------------------------------------------------------------- SOCKS5

#[test]
fn greeting_no_auth() {
    let wire = [0x05, 0x01, 0x00];
    assert_eq!(Greeting::decode(&wire), Ok(Some((Greeting { methods: vec![0] }, 3))));
    assert_prefixes_pending(&wire, Greeting::decode);
    let mut out = Vec::new();
    socks5::encode_method_selection(socks5::METHOD_NO_AUTH, &mut out);
    assert_eq!(out, [0x05, 0x00]);
}

#[test]
fn greeting_two_methods_with_trailing_bytes() {
    let wire = [0x05, 0x02, 0x00, 0x02, 0x05, 0x01];
    let (greeting, used) = Greeting::decode(&wire).unwrap().unwrap();
    assert_eq!((greeting.methods.as_slice(), used), (&[0x00, 0x02][..], 4));
    assert!(greeting.offers(socks5::METHOD_USER_PASS));
}

#[test]
fn greeting_malformed() {
    assert_eq!(Greeting::decode(&[0x04, 0x01, 0x00]), Err(Socks5Error::BadVersion(4)));
    assert_eq!(Greeting::decode(b"GET / HTTP/1.1"), Err(Socks5Error::BadVersion(b'G')));
    assert_eq!(Greeting::decode(&[0x05, 0x00]), Err(Socks5Error::NoMethods));
    let mut out = Vec::new();
    socks5::encode_method_selection(socks5::METHOD_NO_ACCEPTABLE, &mut out);
    assert_eq!(out, [0x05, 0xFF]);
}

#[test]
fn user_pass_rfc1929() {
    let wire = b"\x01\x05alice\x07hunter2";
    let expected = UserPass {
        username: b"alice".to_vec(),
        password: b"hunter2".to_vec(),
    };
    assert_eq!(UserPass::decode(wire), Ok(Some((expected.clone(), wire.len()))));
    assert_prefixes_pending(wire, UserPass::decode);
    let mut out = Vec::new();
    expected.encode(&mut out);
    assert_eq!(out, wire);
    assert_eq!(UserPass::decode(&[0x05, 0x01]), Err(Socks5Error::BadAuthVersion(5)));
    let (mut ok, mut fail) = (Vec::new(), Vec::new());
    socks5::encode_auth_status(true, &mut ok);
    socks5::encode_auth_status(false, &mut fail);
    assert_eq!((ok.as_slice(), fail.as_slice()), (&[1, 0][..], &[1, 1][..]));
    assert_eq!(socks5::decode_auth_status(&ok), Ok(Some((true, 2))));
}

#[test]
fn connect_ipv4() {
    let wire = [0x05, 0x01, 0x00, 0x01, 192, 0, 2, 1, 0x00, 0x50];
    let expected = Request {
        command: Command::Connect,
        addr: v4([192, 0, 2, 1], 80),
    };
    assert_eq!(Request::decode(&wire), Ok(Some((expected.clone(), wire.len()))));
    assert_prefixes_pending(&wire, Request::decode);
    let mut out = Vec::new();
    expected.encode(&mut out);
    assert_eq!(out, wire);
    assert_eq!(expected.addr.to_string(), "192.0.2.1:80");
}

#[test]
fn connect_ipv6() {
    let mut wire = vec![0x05, 0x01, 0x00, 0x04];
    wire.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    wire.extend_from_slice(&443u16.to_be_bytes());
    let (request, used) = Request::decode(&wire).unwrap().unwrap();
    assert_eq!(used, 22);
    assert_eq!(request.addr.to_string(), "[::1]:443");
    assert_eq!(request.addr.host(), "::1");
    assert_prefixes_pending(&wire, Request::decode);
}

#[test]
fn connect_domain() {
    let wire = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb";
    let addr = Address::Domain("example.com".into(), 443);
    assert_eq!(
        Request::decode(wire),
        Ok(Some((
            Request {
                command: Command::Connect,
                addr: addr.clone()
            },
            wire.len()
        )))
    );
    assert_prefixes_pending(wire, Request::decode);
    assert_eq!(
        (addr.to_string(), addr.port(), addr.encoded_len()),
        ("example.com:443".into(), 443, 15)
    );
}

#[test]
fn udp_associate_allows_zero_port() {
    let wire = [0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let (request, _) = Request::decode(&wire).unwrap().unwrap();
    assert_eq!(
        request,
        Request {
            command: Command::UdpAssociate,
            addr: Address::UNSPECIFIED
        }
    );
}

#[test]
fn request_malformed_maps_to_reply_codes() {
    let cases: &[(&[u8], Socks5Error, Reply)] = &[
        (&[0x04, 0x01], Socks5Error::BadVersion(4), Reply::GeneralFailure),
        (
            &[0x05, 0x09],
            Socks5Error::UnsupportedCommand(9),
            Reply::CommandNotSupported,
        ),
        (&[0x05, 0x01, 0x01], Socks5Error::ReservedNonZero, Reply::GeneralFailure),
        (
            &[0x05, 0x01, 0x00, 0x02],
            Socks5Error::UnsupportedAddressType(2),
            Reply::AddressTypeNotSupported,
        ),
        (
            &[0x05, 0x01, 0x00, 0x03, 0x00],
            Socks5Error::BadDomain,
            Reply::GeneralFailure,
        ),
        (
            b"\x05\x01\x00\x03\x03a b\x00\x50",
            Socks5Error::BadDomain,
            Reply::GeneralFailure,
        ),
        (
            b"\x05\x01\x00\x03\x03a\x00b\x00\x50",
            Socks5Error::BadDomain,
            Reply::GeneralFailure,
        ),
        (
            b"\x05\x01\x00\x03\x02\xff\xfe\x00\x50",
            Socks5Error::BadDomain,
            Reply::GeneralFailure,
        ),
        (
            b"\x05\x01\x00\x03\x02a\n",
            Socks5Error::BadDomain,
            Reply::GeneralFailure,
        ),
        (
            &[0x05, 0x01, 0x00, 0x01, 1, 2, 3, 4, 0, 0],
            Socks5Error::ZeroPort,
            Reply::GeneralFailure,
        ),
    ];
    for (wire, error, reply) in cases {
        assert_eq!(Request::decode(wire).as_ref(), Err(error), "{wire:02x?}");
        assert_eq!(error.reply(), *reply);
    }
}

#[test]
fn replies() {
    let mut out = Vec::new();
    socks5::encode_reply(Reply::Succeeded, &v4([10, 0, 0, 1], 1080), &mut out);
    assert_eq!(out, [0x05, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0x04, 0x38]);
    assert_eq!(
        socks5::decode_reply(&out),
        Ok(Some((Reply::Succeeded, v4([10, 0, 0, 1], 1080), 10)))
    );
    assert_prefixes_pending(&out, socks5::decode_reply);

    out.clear();
    socks5::encode_reply(Reply::HostUnreachable, &Address::UNSPECIFIED, &mut out);
    assert_eq!(out, [0x05, 0x04, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_eq!(socks5::decode_reply(&[0x05, 0x09]), Err(Socks5Error::UnknownReply(9)));
    assert_eq!(Reply::AddressTypeNotSupported as u8, 8);
}

#[test]
fn udp_header() {
    let mut datagram = vec![0x00, 0x00, 0x00, 0x01, 8, 8, 8, 8, 0x00, 0x35];
    datagram.extend_from_slice(b"dns query");
    let header = UdpHeader {
        frag: 0,
        addr: v4([8, 8, 8, 8], 53),
    };
    assert_eq!(UdpHeader::decode(&datagram), Ok((header.clone(), 10)));
    let mut out = Vec::new();
    header.encode(&mut out);
    assert_eq!(out, datagram[..10]);

    assert_eq!(UdpHeader::decode(&datagram[..9]), Err(Socks5Error::Truncated));
    assert_eq!(UdpHeader::decode(&[]), Err(Socks5Error::Truncated));
    assert_eq!(UdpHeader::decode(&[0, 1, 0, 1]), Err(Socks5Error::ReservedNonZero));
    assert_eq!(
        UdpHeader::decode(&[0, 0, 0, 7]),
        Err(Socks5Error::UnsupportedAddressType(7))
    );
    let fragment = [0, 0, 2, 3, 1, b'x', 0, 1];
    assert_eq!(UdpHeader::decode(&fragment).unwrap().0.frag, 2);
}

// ---------------------------------------------------------------- HTTP heads

fn request(wire: &str) -> RequestHead {
    let (head, used) = RequestHead::decode(wire.as_bytes(), MAX_HEAD).unwrap().unwrap();
    assert_eq!(used, wire.len());
    head
}

fn response(wire: &str) -> ResponseHead {
    let (head, used) = ResponseHead::decode(wire.as_bytes(), MAX_HEAD).unwrap().unwrap();
    assert_eq!(used, wire.len());
    head
}

#[test]
fn connect_request() {
    let wire = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    assert_prefixes_pending(wire.as_bytes(), |b| RequestHead::decode(b, MAX_HEAD));
    let head = request(wire);
    assert_eq!(
        head.proxy_target(),
        Ok(ProxyTarget::Connect {
            host: "example.com".into(),
            port: 443
        })
    );
    let v6 = request("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n")
        .proxy_target()
        .unwrap();
    assert_eq!(
        (v6.host(), v6.authority()),
        ("2001:db8::1", "[2001:db8::1]:8443".to_string())
    );
    for bad in [
        "example.com",
        "example.com:0",
        "example.com:65536",
        ":443",
        "[::1]443",
        "u@h:1",
        "/x",
    ] {
        let head = request(&format!("CONNECT {bad} HTTP/1.1\r\n\r\n"));
        assert_eq!(head.proxy_target(), Err(HttpError::BadTarget), "{bad}");
    }
}

#[test]
fn absolute_form_targets() {
    let head = request("GET http://example.com:8080/a/b?q=1#frag HTTP/1.1\r\n\r\n");
    let target = head.proxy_target().unwrap();
    let expected = ProxyTarget::Absolute {
        host: "example.com".into(),
        port: 8080,
        origin_form: "/a/b?q=1".into(),
    };
    assert_eq!(target, expected);
    let cases = [
        ("http://example.com", "example.com", 80, "/"),
        ("HTTP://example.com?x", "example.com", 80, "/?x"),
        ("http://[::1]/", "::1", 80, "/"),
        ("http://10.0.0.1:/p", "10.0.0.1", 80, "/p"),
    ];
    for (uri, host, port, path) in cases {
        let target = request(&format!("GET {uri} HTTP/1.1\r\n\r\n")).proxy_target().unwrap();
        let expected = ProxyTarget::Absolute {
            host: host.into(),
            port,
            origin_form: path.into(),
        };
        assert_eq!(target, expected, "{uri}");
    }
    let refused = [
        ("/index.html", HttpError::BadTarget),
        ("*", HttpError::BadTarget),
        ("https://example.com/", HttpError::UnsupportedScheme),
        ("ftp://example.com/", HttpError::UnsupportedScheme),
        ("http://", HttpError::BadTarget),
        ("http://:80/", HttpError::BadTarget),
        ("http://user:pw@example.com/", HttpError::BadTarget),
        ("http://example.com:99999/", HttpError::BadTarget),
        ("http://exa%mple.com/", HttpError::BadTarget),
        ("http://[::1/", HttpError::BadTarget),
    ];
    for (uri, error) in refused {
        let head = request(&format!("GET {uri} HTTP/1.1\r\n\r\n"));
        assert_eq!(head.proxy_target(), Err(error.clone()), "{uri}");
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn keep_alive_rules() {
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n", false),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
    ];
    for (wire, expected) in cases {
        assert_eq!(request(wire).keep_alive(), expected, "{wire:?}");
    }
    assert!(response("HTTP/1.1 200 OK\r\n\r\n").keep_alive());
    assert!(!response("HTTP/1.0 200 OK\r\n\r\n").keep_alive());
    assert!(!response("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").keep_alive());
}

#[test]
fn hop_by_hop_stripping() {
    let head = request(concat!(
        "GET http://example.com/x?y HTTP/1.1\r\n",
        "Host: evil.example\r\n",
        "Connection: keep-alive, X-Secret, Content-Length\r\n",
        "Proxy-Connection: keep-alive\r\n",
        "Proxy-Authorization: Basic dTpw\r\n",
        "Keep-Alive: timeout=5\r\n",
        "TE: trailers\r\n",
        "Trailer: X-T\r\n",
        "Upgrade: websocket\r\n",
        "X-Secret: 1\r\n",
        "Content-Length: 3\r\n",
        "Accept: */*\r\n",
        "\r\n",
    ));
    let upstream = head.to_origin_form(&head.proxy_target().unwrap());
    let mut wire = Vec::new();
    upstream.encode(&mut wire);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "GET /x?y HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n"
    );

    let head = request("GET http://[::1]:8080/ HTTP/1.0\r\nAccept: */*\r\n\r\n");
    let upstream = head.to_origin_form(&head.proxy_target().unwrap());
    assert_eq!(upstream.headers[0], Header::new("Host", "[::1]:8080"));
    assert_eq!((upstream.target.as_str(), upstream.version_minor), ("/", 0));
}

#[test]
fn head_limits_and_malformed_heads() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
    assert_eq!(RequestHead::decode(big.as_bytes(), 64), Err(HttpError::TooLarge));
    assert_eq!(RequestHead::decode(&big.as_bytes()[..63], 64), Ok(None));
    assert_eq!(HttpError::TooLarge.status(), 431);

    let many: String = (0..=http::MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let wire = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        RequestHead::decode(wire.as_bytes(), MAX_HEAD),
        Err(HttpError::TooManyHeaders)
    );
    assert_eq!(HttpError::TooManyHeaders.status(), 431);

    let malformed = [
        "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        "GET / HTTP/1.1\r\nName : v\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
    ];
    for wire in malformed {
        let error = RequestHead::decode(wire.as_bytes(), MAX_HEAD).unwrap_err();
        assert_eq!(error.status(), 400, "{wire:?}: {error}");
    }
    let folded = "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n";
    assert!(ResponseHead::decode(folded.as_bytes(), MAX_HEAD).is_err());
}

#[test]
fn request_body_framing_and_smuggling() {
    let framing = |headers: &str| request(&format!("POST http://h/ HTTP/1.1\r\n{headers}\r\n")).body_framing();
    assert_eq!(framing(""), Ok(BodyFraming::None));
    assert_eq!(framing("Content-Length: 42\r\n"), Ok(BodyFraming::Length(42)));
    assert_eq!(
        framing("Content-Length: 42\r\nContent-Length: 42\r\n"),
        Ok(BodyFraming::Length(42))
    );
    assert_eq!(framing("Content-Length: 42, 42\r\n"), Ok(BodyFraming::Length(42)));
    assert_eq!(framing("Transfer-Encoding: chunked\r\n"), Ok(BodyFraming::Chunked));
    assert_eq!(framing("Transfer-Encoding: Chunked\r\n"), Ok(BodyFraming::Chunked));
    let refused = [
        (
            "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
            HttpError::ConflictingFraming,
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            HttpError::ConflictingFraming,
            400,
        ),
        (
            "Content-Length: 42\r\nContent-Length: 43\r\n",
            HttpError::BadContentLength,
            400,
        ),
        ("Content-Length: 1, 2\r\n", HttpError::BadContentLength, 400),
        ("Content-Length: +5\r\n", HttpError::BadContentLength, 400),
        ("Content-Length: 0x10\r\n", HttpError::BadContentLength, 400),
        (
            "Content-Length: 99999999999999999999\r\n",
            HttpError::BadContentLength,
            400,
        ),
        ("Content-Length:\r\n", HttpError::BadContentLength, 400),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            HttpError::BadTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            HttpError::BadTransferEncoding,
            400,
        ),
        ("Transfer-Encoding: gzip\r\n", HttpError::BadTransferEncoding, 400),
        ("Transfer-Encoding: \r\n", HttpError::BadTransferEncoding, 400),
        ("Transfer-Encoding: xchunked\r\n", HttpError::BadTransferEncoding, 400),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            HttpError::UnsupportedTransferEncoding,
            501,
        ),
    ];
    for (headers, error, status) in refused {
        assert_eq!(framing(headers), Err(error.clone()), "{headers:?}");
        assert_eq!(error.status(), status);
    }
    let http10 = request("POST http://h/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(http10.body_framing(), Err(HttpError::BadTransferEncoding));
}

#[test]
fn response_body_framing() {
    let ok = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(ok.body_framing("GET"), Ok(BodyFraming::Length(5)));
    assert_eq!(ok.body_framing("HEAD"), Ok(BodyFraming::None));
    assert_eq!(
        response("HTTP/1.1 200 OK\r\n\r\n").body_framing("GET"),
        Ok(BodyFraming::UntilClose)
    );
    assert_eq!(
        response("HTTP/1.1 200 OK\r\n\r\n").body_framing("CONNECT"),
        Ok(BodyFraming::None)
    );
    for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
        let head = response(&format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"));
        assert_eq!(head.body_framing("GET"), Ok(BodyFraming::None), "{status}");
    }
    let chunked = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(chunked.body_framing("GET"), Ok(BodyFraming::Chunked));
    let gzip = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(gzip.body_framing("GET"), Ok(BodyFraming::UntilClose));
    let both = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(both.body_framing("GET"), Err(HttpError::ConflictingFraming));
    assert_eq!(
        response("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").reason,
        "Proxy Authentication Required"
    );
    assert_eq!(http::reason_phrase(504), "Gateway Timeout");
    assert_eq!(http::reason_phrase(431), "Request Header Fields Too Large");
}

// ---------------------------------------------------------------- HTTP bodies

const CHUNKED: &[u8] = b"4\r\nWiki\r\n5;name=val\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";

fn feed_whole_and_bytewise(body: &[u8]) -> [Result<(usize, bool), HttpError>; 2] {
    let whole = {
        let mut tracker = BodyTracker::new(BodyFraming::Chunked);
        tracker.feed(body).map(|used| (used, tracker.is_done()))
    };
    let bytewise = {
        let mut tracker = BodyTracker::new(BodyFraming::Chunked);
        let mut used = 0;
        let mut result = Ok(());
        for byte in body {
            match tracker.feed(std::slice::from_ref(byte)) {
                Ok(n) => used += n,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        result.map(|()| (used, tracker.is_done()))
    };
    [whole, bytewise]
}

#[test]
fn chunked_body_whole_and_byte_at_a_time() {
    let mut input = CHUNKED.to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    for result in feed_whole_and_bytewise(&input) {
        assert_eq!(result, Ok((CHUNKED.len(), true)));
    }
    for result in feed_whole_and_bytewise(b"0\r\n\r\n") {
        assert_eq!(result, Ok((5, true)));
    }
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert_eq!(tracker.feed(&CHUNKED[..CHUNKED.len() - 1]), Ok(CHUNKED.len() - 1));
    assert!(!tracker.is_done());
}

#[test]
fn chunked_body_malformed() {
    let bad: &[&[u8]] = &[
        b"\r\n",                    // missing size
        b"x\r\n",                   // not hex
        b"-1\r\n",                  // sign
        b"4\nWiki\r\n0\r\n\r\n",    // bare LF after size
        b"4\r\nWikiX\r\n",          // data longer than size
        b"4\r\nWiki\n0\r\n\r\n",    // bare LF after data
        b"4 x\r\n",                 // junk after size
        b"4;a\0b\r\n",              // NUL in extension
        b"0\r\n folded: x\r\n\r\n", // obs-fold in trailers
        b"0\r\nno-colon\r\n\r\n",   // trailer without a field name
        b"0\r\n\r\r",               // CR not followed by LF at the end
    ];
    for body in bad {
        for result in feed_whole_and_bytewise(body) {
            let error = result.unwrap_err();
            assert!(matches!(error, HttpError::BadChunk(_)), "{body:?}");
            assert_eq!(error.status(), 400);
        }
    }
}

#[test]
fn length_and_until_close_bodies() {
    let mut tracker = BodyTracker::new(BodyFraming::Length(5));
    assert_eq!((tracker.feed(b"hel"), tracker.is_done()), (Ok(3), false));
    assert_eq!((tracker.feed(b"lo world"), tracker.is_done()), (Ok(2), true));
    assert_eq!(tracker.feed(b"more"), Ok(0));
    assert!(BodyTracker::new(BodyFraming::None).is_done());
    assert!(BodyTracker::new(BodyFraming::Length(0)).is_done());
    let mut until_close = BodyTracker::new(BodyFraming::UntilClose);
    assert_eq!(until_close.feed(b"anything"), Ok(8));
    assert!(!until_close.is_done());
}
