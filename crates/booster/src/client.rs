//! A small HTTP client for the node's own API (used by `booster status`, `connect` and
//! `monitor`), with a reader for its event stream.

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

/// Largest event the stream reader accepts; a snapshot of a node with many sources and peers
/// is a few tens of kB.
const MAX_EVENT: usize = 4 * 1024 * 1024;
/// The node sends a keep-alive comment every 15 s; nothing for this long means it is gone.
const EVENT_IDLE: std::time::Duration = std::time::Duration::from_secs(20);

/// Splits a Server-Sent Events byte stream into the `data` of each event.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Takes the next bytes; returns the data of every event they complete (`data:` lines
    /// joined by newlines; comments and other fields skipped).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_blank_line(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            let text = String::from_utf8_lossy(&block);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        if self.buf.len() > MAX_EVENT {
            return Err(format!("an event larger than {MAX_EVENT} bytes"));
        }
        Ok(out)
    }
}

/// Where the first blank line (`\n\n` or `\r\n\r\n`) starts, and its length.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Follows the node's event stream (`GET /api/events`), calling `on_event` with each snapshot,
/// until the stream ends or fails (the node stopped, or went silent). `on_event` returns
/// `false` to stop. An error says why the stream is gone.
pub async fn follow_events(
    api: &str,
    token: Option<&str>,
    mut on_event: impl FnMut(serde_json::Value) -> bool,
) -> Result<(), String> {
    use hyper::body::Body;
    let addr = api.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let _abort = AbortOnDrop(driver);
    let mut req = hyper::Request::get("/api/events")
        .header("host", addr)
        .header("accept", "text/event-stream");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if status != 200 {
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(format!("{status}: {}", v["error"].as_str().unwrap_or("error")));
    }
    let mut parser = SseParser::default();
    loop {
        let frame = tokio::time::timeout(EVENT_IDLE, body.frame())
            .await
            .map_err(|_| format!("no event for {} s", EVENT_IDLE.as_secs()))?;
        let Some(frame) = frame else {
            return Err("the node closed the event stream".into());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else { continue };
        for event in parser.push(data)? {
            let v = serde_json::from_str(&event).map_err(|e| format!("bad event from the node: {e}"))?;
            if !on_event(v) {
                return Ok(());
            }
        }
        if body.is_end_stream() {
            return Err("the node closed the event stream".into());
        }
    }
}

/// Aborts a task when dropped (the connection driver of a stream given up on).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: snapshot\nid: 0\ndata: {\"a\"").unwrap().is_empty());
        assert_eq!(
            p.push(b":1}\n\n: keep-alive\n\ndata: 2\r\n\r\n").unwrap(),
            ["{\"a\":1}", "2"]
        );
        assert_eq!(p.push(b"data: x\ndata: y\n\n").unwrap(), ["x\ny"]);
    }
}
