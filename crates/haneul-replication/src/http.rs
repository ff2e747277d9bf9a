//! A small HTTP(S) client for a peer's REST API (the anti-entropy digests
//! and versions), and for `haneul replication verify` talking to its own
//! server: hyper's HTTP/1.1 client over TCP, or over rustls with the
//! `haneul-tls` client profile for https, with an API token as Bearer
//! credentials (or other ones, or none, for a migration's DICOMweb source).
//! One connection per request: verify makes few of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
pub use hyper::body::Incoming;
pub use hyper::{HeaderMap, Method, Response, StatusCode};
use hyper::{Request, Uri};

/// Where https peers' certificates are checked when no `ca_file` is set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest JSON answer read.
const MAX_JSON_BYTES: usize = 256 << 20;

/// A failed request, as an error message naming the URL.
pub type HttpError = String;

/// An HTTP endpoint with the credentials to present.
#[derive(Clone)]
pub struct HttpClient {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` as the URL gave it, for the Host header.
    authority: String,
    /// Path prefix of the base URL, without a trailing slash.
    prefix: String,
    /// The Authorization header's value; `None`: no header.
    authorization: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(f, "HttpClient({})", self.base_url())
    }
}

impl HttpClient {
    /// A client of the server at `url` (http:// or https://, optionally with
    /// a path prefix); https checks the server against `ca_file`, else the
    /// system's authorities, and presents `identity` if the server asks.
    pub fn new(
        url: &str,
        token: &str,
        ca_file: Option<&Path>,
        identity: Option<&haneul_tls::ClientIdentity>,
    ) -> Result<HttpClient, HttpError> {
        let uri: Uri = url.trim_end_matches('/').parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url:?} must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{url:?} names no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let path = ca_file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            Some(haneul_tls::client_config_with_identity(&path, identity).map_err(|error| error.to_string())?)
        } else {
            None
        };
        Ok(HttpClient {
            https,
            host,
            port,
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            authorization: Some(format!("Bearer {}", token.trim())),
            tls,
        })
    }

    /// The same endpoint with other credentials: the Authorization header's
    /// whole value (e.g. `Basic …`), or `None` to send no such header.
    pub fn with_authorization(mut self, value: Option<String>) -> HttpClient {
        self.authorization = value;
        self
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}{}", if self.https { "https" } else { "http" }, self.authority, self.prefix)
    }

    /// Send a request; the answer's head is back within `timeout`.
    pub async fn send(&self, method: Method, path: &str, timeout: Duration) -> Result<Response<Incoming>, HttpError> {
        self.send_with(method, path, None, None, timeout).await
    }

    /// [`HttpClient::send`] asking for the media type `accept`; the body
    /// is read as it comes, e.g. with [`next_chunk`].
    pub async fn send_accepting(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        timeout: Duration,
    ) -> Result<Response<Incoming>, HttpError> {
        self.send_with(method, path, Some(accept), None, timeout).await
    }

    /// `json`: a request body, sent as `application/json`.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        json: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, HttpError> {
        let url = format!("{}{path}", self.base_url());
        tokio::time::timeout(timeout, self.send_now(method, path, accept, json))
            .await
            .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
            .map_err(|error| format!("{url}: {error}"))
    }

    async fn send_now(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        json: Option<Bytes>,
    ) -> Result<Response<Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| format!("cannot connect to {}:{}: {error}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::USER_AGENT, concat!("haneul-replication/", env!("CARGO_PKG_VERSION")));
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        if let Some(accept) = accept {
            request = request.header(hyper::header::ACCEPT, accept);
        }
        if json.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        // The error names no header value: the credentials are among them.
        let request = request.body(http_body_util::Full::new(json.unwrap_or_default())).map_err(|_| {
            "the request cannot be built: a header value (the credentials?) holds characters HTTP does not allow"
                .to_string()
        })?;
        let Some(tls) = &self.tls else {
            return exchange(tcp, request).await;
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|error| format!("{:?} is not a server name: {error}", self.host))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS with {}:{} failed: {error}", self.host, self.port))?;
        exchange(stream, request).await
    }

    /// GET a JSON document; `None` for 404.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<Option<T>, HttpError> {
        let (status, body) = self.call(Method::GET, path, timeout).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(failure(&self.base_url(), path, status, &body));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|error| format!("{}{path}: not the expected JSON: {error}", self.base_url()))
    }

    /// A request whose whole answer is read (up to 256 MiB) within `timeout`.
    pub async fn call(&self, method: Method, path: &str, timeout: Duration) -> Result<(StatusCode, Bytes), HttpError> {
        self.call_with(method, path, None, None, timeout).await.map(|(status, _, body)| (status, body))
    }

    /// POST a JSON document; the whole answer is read within `timeout`.
    pub async fn post_json(
        &self,
        path: &str,
        document: &serde_json::Value,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let body = Bytes::from(document.to_string());
        self.call_with(Method::POST, path, None, Some(body), timeout).await.map(|(status, _, body)| (status, body))
    }

    /// [`HttpClient::call`] asking for the media type `accept`; with the answer's headers.
    pub async fn call_accepting(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Bytes), HttpError> {
        self.call_with(method, path, Some(accept), None, timeout).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        json: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Bytes), HttpError> {
        let url = format!("{}{path}", self.base_url());
        let read = async {
            let response = self.send_with(method, path, accept, json, timeout).await?;
            let status = response.status();
            let (head, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_JSON_BYTES)
                .collect()
                .await
                .map_err(|error| format!("{url}: reading the answer failed: {error}"))?;
            Ok((status, head.headers, body.to_bytes()))
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
    }
}

/// The next piece of an answer's body as it arrives; `None` at its end
/// (trailers are skipped).
pub async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, HttpError>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(error) => return Some(Err(format!("reading the answer failed: {error}"))),
        }
    }
}

/// `text` as one path segment or query value: everything but unreserved
/// characters percent-encoded. UIDs come from stored data (legacy archives
/// hold letters, spaces), AE titles may hold spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The error of a non-success answer, with the server's `error` message when it sent one.
pub fn failure(base: &str, path: &str, status: StatusCode, body: &[u8]) -> HttpError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("error").and_then(|error| error.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    format!("{base}{path} answered {status}: {message}")
}

async fn exchange<S>(stream: S, request: Request<http_body_util::Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(|error| format!("request failed: {error}"))
}
