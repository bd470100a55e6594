//! How a range fetch reaches the origin through one source: the [`Connector`] trait and its two
//! transports, plus TLS on top of either.
//!
//! - [`NodeConnector`]: in-process, over a [`Node`]'s sources, through [`crate::dial::dial`]
//!   (bound to each uplink, counted per source). `booster get` without `--node`, the tests, and
//!   later the proxy's transparent splitting.
//! - [`ProxyConnector`]: through a running node's proxy, `CONNECT host:port` with the source
//!   pinned by the `X-Booster-Source` header. `booster get --node API`.

use super::FetchError;
use crate::{dial::dial, source::Source, state::Node, target::Target};
use proto::http::{ResponseHead, MAX_HEAD};
use std::{future::Future, io, path::Path, pin::Pin, sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream to an origin (plain TCP, an emulated link, a proxy tunnel, or TLS over those).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens connections to an origin through one of several sources.
pub trait Connector: Send + Sync {
    /// The sources' names; a source's index here is its id everywhere in the fetch.
    fn sources(&self) -> Vec<String>;
    /// A TCP connection (or equivalent) to `host:port` through source `source`.
    fn connect<'a>(&'a self, source: usize, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Box<dyn Stream>>>;
    /// What the source is believed to deliver (bytes/s), to size its first piece.
    fn prior_rate(&self, _source: usize) -> Option<f64> {
        None
    }
}

/// Connections through a node's own sources, opened with [`dial`].
pub struct NodeConnector {
    node: Arc<Node>,
    sources: Vec<Arc<Source>>,
    /// Connect here instead of the URL's host and port (the proxy's SOCKS5 tunnel target).
    via: Option<Target>,
}

impl NodeConnector {
    /// Uses every source the node can use now.
    pub fn new(node: Arc<Node>) -> NodeConnector {
        let now = std::time::Instant::now();
        let sources = node.sources().into_iter().filter(|s| s.usable(now)).collect();
        NodeConnector {
            node,
            sources,
            via: None,
        }
    }

    /// Uses exactly these sources, in this order.
    pub fn with_sources(node: Arc<Node>, sources: Vec<Arc<Source>>) -> NodeConnector {
        NodeConnector {
            node,
            sources,
            via: None,
        }
    }

    /// Connects every request to `via` instead of the URL's host and port.
    pub fn via(mut self, via: Option<Target>) -> NodeConnector {
        self.via = via;
        self
    }
}

impl Connector for NodeConnector {
    fn sources(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }

    fn prior_rate(&self, source: usize) -> Option<f64> {
        let v = self.sources.get(source)?.view();
        v.capacity_known.then_some(v.capacity)
    }

    fn connect<'a>(&'a self, source: usize, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let src = self
                .sources
                .get(source)
                .ok_or_else(|| io::Error::other("no such source"))?;
            let target = self.via.clone().unwrap_or_else(|| Target::new(host, port));
            // The node's address rules hold for range requests too, once the name resolved.
            let policies = self.node.policies();
            let name = target.domain();
            let allow = |ip| policies.permits(&src.name, name, ip);
            match dial(&self.node, src, &target, &self.node.dial_opts, allow).await {
                Ok(conn) => {
                    src.record_success(Some(conn.connect_time));
                    Ok(Box::new(conn) as Box<dyn Stream>)
                }
                Err(e) => {
                    if e.source_fault() {
                        src.record_failure(std::time::Instant::now());
                    }
                    Err(io::Error::other(e.to_string()))
                }
            }
        })
    }
}

/// Connections through a running node's proxy, one source pinned per connection.
pub struct ProxyConnector {
    /// The node's proxy address (`host:port`).
    pub proxy: String,
    pub sources: Vec<String>,
}

impl Connector for ProxyConnector {
    fn sources(&self) -> Vec<String> {
        self.sources.clone()
    }

    fn connect<'a>(&'a self, source: usize, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let name = self
                .sources
                .get(source)
                .ok_or_else(|| io::Error::other("no such source"))?;
            let mut s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&self.proxy))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the node's proxy timed out"))??;
            s.set_nodelay(true)?;
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let req = format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{}: {name}\r\n\r\n",
                crate::http_proxy::PIN_HEADER
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::with_capacity(512);
            let head = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    // Read byte by byte-ish: nothing may be consumed past the head.
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the node's proxy closed the connection",
                        ));
                    }
                    buf.push(b[0]);
                    if buf.ends_with(b"\r\n\r\n") {
                        return match ResponseHead::decode(&buf, MAX_HEAD) {
                            Ok(Some((h, _))) => Ok(h),
                            _ => Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "bad answer from the node's proxy",
                            )),
                        };
                    }
                    if buf.len() > MAX_HEAD {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "answer from the node's proxy too large",
                        ));
                    }
                }
            })
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the node's proxy did not answer CONNECT"))??;
            if !(200..300).contains(&head.status) {
                return Err(io::Error::other(format!(
                    "the node's proxy refused CONNECT through {name}: {} {}",
                    head.status, head.reason
                )));
            }
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}

/// A TLS client configuration: the webpki roots, plus the certificates in `cacert` (PEM).
pub fn tls_config(cacert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = cacert {
        let bad = |e: String| FetchError::Usage(format!("--cacert {}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
        let mut n = 0;
        for cert in certs {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake for `host` over `io`.
pub async fn tls_wrap(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    io: Box<dyn Stream>,
) -> Result<Box<dyn Stream>, FetchError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| FetchError::Tls(format!("`{host}` is not a valid TLS server name")))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = tokio::time::timeout(Duration::from_secs(15), connector.connect(name, io))
        .await
        .map_err(|_| FetchError::Timeout("TLS handshake"))?
        .map_err(|e| FetchError::Tls(e.to_string()))?;
    Ok(Box::new(tls))
}
