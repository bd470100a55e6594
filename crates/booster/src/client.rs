//! A small HTTP client for the node's own API (used by `booster status`).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

pub async fn get_json(api: &str, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let addr = api.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("bad JSON from the node: {e}"))
}
