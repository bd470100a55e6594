//! A small HTTP client for the node's own API (used by `booster status`).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

pub async fn get_json(api: &str, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    match request(api, "GET", path, None, token).await? {
        (status, v) if status < 300 => Ok(v),
        (status, v) => Err(format!("{status}: {}", v["error"].as_str().unwrap_or("error"))),
    }
}

/// One API request; returns the status and the JSON body (`null` when empty).
pub async fn request(
    api: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), String> {
    use http_body_util::Full;
    let addr = api.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    driver.abort();
    if bytes.is_empty() {
        return Ok((status, serde_json::Value::Null));
    }
    let v = serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON from the node ({status}): {e}"))?;
    Ok((status, v))
}

/// Sends `GET uri` over an already-open stream and counts the body bytes, stopping early at
/// `stop_at` if given. `uri` may be origin-form (`/file/1MB`, to a server) or absolute-form
/// (`http://host/file/1MB`, to a proxy). Returns the body bytes received.
pub async fn get_count<S>(
    stream: S,
    host: &str,
    uri: &str,
    stop_at: Option<tokio::time::Instant>,
) -> Result<u64, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::body::Body;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(uri)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        driver.abort();
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    loop {
        let frame = match stop_at {
            Some(t) => match tokio::time::timeout_at(t, body.frame()).await {
                Ok(f) => f,
                Err(_) => break,
            },
            None => body.frame().await,
        };
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    n += d.len() as u64;
                }
            }
            Some(Err(e)) => {
                driver.abort();
                return Err(e.to_string());
            }
            None => break,
        }
        if body.is_end_stream() {
            break;
        }
    }
    driver.abort();
    Ok(n)
}
