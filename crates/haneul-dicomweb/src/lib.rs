//! The HTTP edge: DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI, PS3.18) and
//! the REST API for what DICOMweb does not cover.
//!
//! Handlers translate HTTP into archive-core calls (the same query model
//! and matcher as C-FIND); they never touch the catalog or the blob store.
//! Every route is listed once in [`routes`], which builds the router and is
//! checked against the OpenAPI document (`openapi.json`).

mod api;
pub mod auth;
mod connections;
mod corrections;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
mod migration;
mod qido;
mod rendered;
mod replication;
mod retrieve;
mod stow;
pub mod tls;
mod wado_uri;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use haneul_core::{Archive, Origin};
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use api::OPENAPI;
pub use auth::{Access, AuthConfig, AuthMethod, OidcConfig, Principal};
pub use error::{ApiError, ApiResult};

/// [`WebConfig::qido_max_results`] by default: an answer of some tens of
/// megabytes at most, more than any study list shows.
pub const DEFAULT_QIDO_MAX_RESULTS: usize = 10_000;

/// Settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Path prefix of DICOMweb resources, e.g. `/dicom-web`.
    pub base_path: String,
    /// Public URL of the server (`https://pacs.example.org`) for RetrieveURL
    /// and BulkDataURI; by default taken from the request's Host.
    pub public_url: Option<String>,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Largest STOW-RS request body.
    pub max_upload_bytes: u64,
    /// Most matches one QIDO-RS answer carries, whatever `limit` asks: the
    /// answer is built in memory, so an unbounded search of a large archive
    /// (`GET /instances`) would take the server's memory. More are announced
    /// with a `Warning: 299` header and reached with `offset` (PS3.18 8.3.4.4).
    pub qido_max_results: usize,
    /// How long an upload may bring no data, and a download's client take
    /// none, before the request fails (see `connections`).
    pub idle_timeout: std::time::Duration,
    /// Our AE title and DICOM port, for the REST API.
    pub ae_title: String,
    pub dicom_port: u16,
    /// The AEs this node knows, shared with the DIMSE server (the same directory).
    pub known_aes: haneul_core::aes::AeDirectory,
    pub auth: AuthConfig,
}

impl WebConfig {
    /// Requests without credentials act as `role` (in-process tests, and
    /// servers that only listen on loopback).
    pub fn with_anonymous_role(mut self, role: haneul_core::Role) -> WebConfig {
        self.auth.anonymous_role = Some(role);
        self
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            base_path: "/dicom-web".into(),
            public_url: None,
            cors_origins: vec!["*".into()],
            max_upload_bytes: 8 << 30,
            qido_max_results: DEFAULT_QIDO_MAX_RESULTS,
            idle_timeout: std::time::Duration::from_secs(300),
            ae_title: "HANEUL".into(),
            dicom_port: 11112,
            known_aes: haneul_core::aes::AeDirectory::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

struct Inner {
    archive: Arc<Archive>,
    config: WebConfig,
    auth: auth::Auth,
    started: Instant,
    /// (when, instances stored so far), sampled for the recent ingest rate.
    samples: std::sync::Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

impl WebState {
    pub fn new(archive: Arc<Archive>, config: WebConfig) -> WebState {
        let state = WebState {
            inner: Arc::new(Inner {
                archive,
                auth: auth::Auth::new(config.auth.clone()),
                config,
                started: Instant::now(),
                samples: Default::default(),
            }),
        };
        // Sample the stored-instance counter every 5 s for a one-minute rate.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&state.inner);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    ticks.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let stored = inner.archive.metrics().instances_stored.get();
                    let mut samples = inner.samples.lock().unwrap_or_else(|p| p.into_inner());
                    samples.push_back((Instant::now(), stored));
                    while samples.len() > 13 {
                        samples.pop_front();
                    }
                }
            });
        }
        state
    }

    /// Instances stored per second over about the last minute.
    pub fn recent_ingest_rate(&self) -> f64 {
        let samples = self.inner.samples.lock().unwrap_or_else(|p| p.into_inner());
        match (samples.front(), samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => (n1 - n0) as f64 / (*t1 - *t0).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn archive(&self) -> &Arc<Archive> {
        &self.inner.archive
    }

    pub fn config(&self) -> &WebConfig {
        &self.inner.config
    }

    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }
}

/// Who asked and where to point URLs back to, per request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: String,
    pub origin: Origin,
    /// `scheme://host` as the client reached us.
    pub public_root: String,
    /// Who the request acts as, once authenticated.
    pub principal: Option<Principal>,
}

impl RequestContext {
    /// An audit record of this request: the actor is the signed-in user
    /// (`anonymous` where the server lets anonymous requests in); the source
    /// is the client's address.
    pub fn audit_entry(&self, action: haneul_core::audit::Action) -> haneul_core::audit::Entry {
        let source = haneul_core::audit::source_host(&self.origin.address);
        let actor = self.principal.as_ref().map_or("anonymous", |principal| principal.user.as_str());
        let entry = haneul_core::audit::Entry::new(action, actor, source, &self.id);
        match &self.principal {
            Some(principal) => entry.detail("auth", serde_json::to_value(principal.method).unwrap_or_default()),
            None => entry,
        }
    }

    /// URL of the DICOMweb service root, e.g. `http://host:8080/dicom-web`.
    pub fn service_url(&self, state: &WebState) -> String {
        format!("{}{}", self.public_root, state.config().base_path)
    }
}

async fn request_context(State(state): State<WebState>, mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.to_string());
    let listen = request.extensions().get::<ListenPort>().copied();
    let public_root = public_root(state.config().public_url.as_deref(), request.headers(), listen);
    let user_agent =
        request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("http").to_string();
    let origin = Origin {
        actor: user_agent,
        address: peer.unwrap_or_else(|| "unknown".into()),
        session: id.clone(),
        ..Origin::default()
    };
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    request.extensions_mut().insert(RequestContext { id: id.clone(), origin, public_root, principal: None });
    let started = Instant::now();
    let response = {
        let _guard = span.enter();
        next.run(request)
    }
    .await;
    let status = response.status().as_u16();
    let _guard = span.enter();
    tracing::info!(status, millis = started.elapsed().as_millis() as u64, "http");
    response
}

/// The port the HTTP listener is bound to and whether it speaks TLS (a
/// request extension set by [`serve`] and [`tls::serve_tls`]).
#[derive(Debug, Clone, Copy)]
struct ListenPort {
    port: u16,
    https: bool,
}

fn public_root(public_url: Option<&str>, headers: &HeaderMap, listen: Option<ListenPort>) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_string();
    }
    let header_text =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let direct_scheme = if listen.is_some_and(|listen| listen.https) { "https" } else { "http" };
    let scheme = header_text("x-forwarded-proto").unwrap_or(direct_scheme);
    let host = header_text("x-forwarded-host").or_else(|| header_text("host")).unwrap_or("localhost");
    // Some clients (dicomweb-client among them) send Host without the port.
    // A direct request came in on our listening port, so the URLs we hand
    // out must name it; behind a proxy the forwarded headers decide.
    let proxied = ["x-forwarded-host", "x-forwarded-proto", "forwarded"].iter().any(|name| header_text(name).is_some());
    let default_port = if scheme == "https" { 443 } else { 80 };
    match listen.map(|listen| listen.port) {
        Some(port) if !proxied && port != default_port && !names_port(host) => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    }
}

/// Whether a Host value (`name`, `name:port`, `[v6]`, `[v6]:port`) has a port.
fn names_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((name, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.starts_with('[') || name.ends_with(']'))
        }
        None => false,
    }
}

/// One route: path, the methods it answers with what each needs, and the handlers.
pub struct Route {
    pub path: String,
    pub methods: &'static [(&'static str, Access)],
    pub handler: MethodRouter<WebState>,
}

fn route(path: String, methods: &'static [(&'static str, Access)], handler: MethodRouter<WebState>) -> Route {
    Route { path, methods, handler }
}

/// Every HTTP resource Haneul serves, with the permission each method needs.
pub fn routes(base_path: &str) -> Vec<Route> {
    use auth::Access::{Needs, Public, SignedIn};
    use haneul_core::Permission::{Audit, Configure, Correct, Delete, Monitor, Query, Retrieve, Store, View};
    let b = base_path.trim_end_matches('/');
    let study = format!("{b}/studies/{{study}}");
    let series = format!("{study}/series/{{series}}");
    let instance = format!("{series}/instances/{{instance}}");
    let frames = format!("{instance}/frames/{{frames}}");
    const QUERY: &[(&str, Access)] = &[("GET", Needs(Query))];
    const RETRIEVE: &[(&str, Access)] = &[("GET", Needs(Retrieve))];
    const VIEW: &[(&str, Access)] = &[("GET", Needs(View))];
    const MONITOR: &[(&str, Access)] = &[("GET", Needs(Monitor))];
    vec![
        route(
            format!("{b}/studies"),
            &[("GET", Needs(Query)), ("POST", Needs(Store))],
            get(qido::studies).post(stow::store),
        ),
        route(
            study.clone(),
            &[("GET", Needs(Retrieve)), ("POST", Needs(Store))],
            get(retrieve::study).post(stow::store_in_study),
        ),
        route(format!("{study}/metadata"), RETRIEVE, get(retrieve::study_metadata)),
        route(format!("{study}/rendered"), VIEW, get(retrieve::study_rendered)),
        route(format!("{study}/thumbnail"), VIEW, get(retrieve::study_thumbnail)),
        route(format!("{study}/series"), QUERY, get(qido::study_series)),
        route(format!("{study}/instances"), QUERY, get(qido::study_instances)),
        route(series.clone(), RETRIEVE, get(retrieve::series)),
        route(format!("{series}/metadata"), RETRIEVE, get(retrieve::series_metadata)),
        route(format!("{series}/rendered"), VIEW, get(retrieve::series_rendered)),
        route(format!("{series}/thumbnail"), VIEW, get(retrieve::series_thumbnail)),
        route(format!("{series}/instances"), QUERY, get(qido::series_instances)),
        route(instance.clone(), RETRIEVE, get(retrieve::instance)),
        route(format!("{instance}/metadata"), RETRIEVE, get(retrieve::instance_metadata)),
        route(format!("{instance}/rendered"), VIEW, get(retrieve::instance_rendered)),
        route(format!("{instance}/thumbnail"), VIEW, get(retrieve::instance_thumbnail)),
        route(format!("{instance}/bulkdata/{{path}}"), RETRIEVE, get(retrieve::bulkdata)),
        route(frames.clone(), RETRIEVE, get(retrieve::frames)),
        route(format!("{frames}/rendered"), VIEW, get(retrieve::frames_rendered)),
        route(format!("{frames}/thumbnail"), VIEW, get(retrieve::frames_thumbnail)),
        route(format!("{b}/series"), QUERY, get(qido::all_series)),
        route(format!("{b}/instances"), QUERY, get(qido::all_instances)),
        route("/wado".into(), RETRIEVE, get(wado_uri::wado)),
        route("/api/login".into(), &[("POST", Public)], post(auth::login)),
        route("/api/logout".into(), &[("POST", SignedIn)], post(auth::logout)),
        route("/api/session".into(), &[("GET", SignedIn)], get(auth::session)),
        route("/api/password".into(), &[("POST", SignedIn)], post(auth::password)),
        route("/api/status".into(), MONITOR, get(api::status)),
        route("/api/statistics".into(), MONITOR, get(api::statistics)),
        route("/api/aes".into(), &[("GET", Needs(Configure))], get(api::aes)),
        route(
            "/api/aes/{title}".into(),
            &[("PUT", Needs(Configure)), ("DELETE", Needs(Configure))],
            put(api::put_shared_ae).delete(api::delete_shared_ae),
        ),
        route("/api/studies/{study}".into(), &[("DELETE", Needs(Delete))], delete(api::delete_study)),
        route(
            "/api/studies/{study}/corrections".into(),
            &[("GET", Needs(Query)), ("POST", Needs(Correct))],
            get(corrections::study_corrections).post(corrections::correct_study),
        ),
        route(
            "/api/studies/{study}/series/{series}/corrections".into(),
            &[("POST", Needs(Correct))],
            post(corrections::correct_series),
        ),
        route("/api/corrections".into(), &[("POST", Needs(Correct))], post(corrections::merge)),
        route("/api/patients/merge".into(), &[("POST", Needs(Correct))], post(corrections::merge_patient)),
        route("/api/patients/unmerge".into(), &[("POST", Needs(Correct))], post(corrections::unmerge_patient)),
        route("/api/series/{series}".into(), &[("DELETE", Needs(Delete))], delete(api::delete_series)),
        route("/api/instances/{instance}".into(), &[("DELETE", Needs(Delete))], delete(api::delete_instance)),
        route("/api/audit".into(), &[("GET", Needs(Audit))], get(api::audit)),
        route("/api/replication/conflicts".into(), &[("GET", Needs(Query))], get(api::conflicts)),
        route("/api/replication/conflicts/{id}".into(), &[("GET", Needs(Retrieve))], get(api::conflict_file)),
        // Anti-entropy between peers: digests reveal only which UIDs are held
        // (what a query shows), the bytes are a retrieve.
        route("/api/replication/tree".into(), QUERY, get(replication::tree)),
        route("/api/replication/tree/{bucket}".into(), QUERY, get(replication::bucket)),
        route("/api/replication/studies/{study}/digests".into(), QUERY, get(replication::study_digests)),
        route("/api/replication/corrections".into(), QUERY, get(replication::corrections)),
        route("/api/replication/instances/{instance}/versions/{digest}".into(), RETRIEVE, get(replication::version)),
        route("/api/replication/peers/{name}/verify".into(), &[("POST", Needs(Configure))], post(replication::verify)),
        route("/api/migrations".into(), MONITOR, get(migration::list)),
        route("/api/migrations/{source}".into(), MONITOR, get(migration::status)),
        route("/api/migrations/{source}/report".into(), QUERY, get(migration::report)),
        route("/api/migrations/{source}/{action}".into(), &[("POST", Needs(Configure))], post(migration::act)),
        route("/api/openapi.json".into(), &[("GET", SignedIn)], get(api::openapi)),
        route("/metrics".into(), MONITOR, get(api::metrics)),
    ]
}

/// The complete router with CORS, compression and request context.
pub fn router(state: WebState) -> Router {
    router_with(state, Router::new())
}

/// The complete router with `extra` routes merged in (the built-in viewer);
/// paths that neither serves still get the JSON 404.
pub fn router_with(state: WebState, extra: Router<WebState>) -> Router {
    let mut router = extra;
    for route in routes(&state.config().base_path) {
        let gate = auth::Gate { state: state.clone(), methods: route.methods };
        router = router
            .route(&route.path, route.handler.route_layer(axum::middleware::from_fn_with_state(gate, auth::gate)));
    }
    let cors = cors_layer(&state.config().cors_origins);
    // JSON and the viewer's text (HTML, JS, CSS, SVG) compress well; DICOM and
    // images do not, and are left alone.
    let compressible = SizeAbove::new(1024).and(is_compressible);
    router
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_context))
        .layer(CompressionLayer::new().gzip(true).br(true).compress_when(compressible))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ))
        // The API's answers are data, never pages: nothing in them may run,
        // load or be framed. The viewer's page sets its own, wider policy.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(cors)
        .with_state(state)
}

/// Whether a response is worth compressing: JSON (`application/json`,
/// `application/dicom+json`) and text the web viewer loads (`text/html`,
/// `text/javascript`, `text/css`, `image/svg+xml`).
fn is_compressible(
    _: axum::http::StatusCode,
    _: axum::http::Version,
    headers: &HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    const TYPES: [&str; 7] = [
        "application/json",
        "application/dicom+json",
        "text/html",
        "text/javascript",
        "application/javascript",
        "text/css",
        "image/svg+xml",
    ];
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    TYPES.iter().any(|kind| essence.eq_ignore_ascii_case(kind))
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::ETAG,
            header::CONTENT_RANGE,
            // A QIDO-RS answer cut at the server's maximum says so here.
            header::WARNING,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn fallback(request: Request) -> ApiError {
    ApiError::NotFound(format!("no resource at {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> Response {
    let body = serde_json::json!({ "error": format!("{} is not allowed on {}", request.method(), request.uri().path()), "status": 405 });
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

use axum::response::IntoResponse;

/// Serve the router on a listener until `shutdown` resolves (HTTP/1.1 and
/// HTTP/2 over cleartext, keep-alive).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, state, Router::new(), shutdown).await
}

/// [`serve`] with `extra` routes merged into the router (see [`router_with`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: WebState,
    extra: Router<WebState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let idle_timeout = state.config().idle_timeout;
    let mut router = router_with(state, extra);
    if let Ok(local) = listener.local_addr() {
        router = router.layer(axum::Extension(ListenPort { port: local.port(), https: false }));
    }
    connections::serve_connections(listener, router, None, idle_timeout, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    fn plain(port: u16) -> Option<ListenPort> {
        Some(ListenPort { port, https: false })
    }

    fn https(port: u16) -> Option<ListenPort> {
        Some(ListenPort { port, https: true })
    }

    #[test]
    fn public_root_over_tls_says_https_and_leaves_out_port_443() {
        assert_eq!(public_root(None, &headers(&[("host", "pacs")]), https(8443)), "https://pacs:8443");
        assert_eq!(public_root(None, &headers(&[("host", "pacs")]), https(443)), "https://pacs");
        assert_eq!(public_root(None, &headers(&[("host", "pacs:8443")]), https(8443)), "https://pacs:8443");
    }

    #[test]
    fn public_root_adds_the_listening_port_when_a_direct_client_leaves_it_out() {
        // dicomweb-client sends `Host: 127.0.0.1` to a server on port 8080.
        assert_eq!(public_root(None, &headers(&[("host", "127.0.0.1")]), plain(8080)), "http://127.0.0.1:8080");
        assert_eq!(public_root(None, &headers(&[("host", "pacs:9000")]), plain(8080)), "http://pacs:9000");
        assert_eq!(public_root(None, &headers(&[("host", "[::1]")]), plain(8080)), "http://[::1]:8080");
        assert_eq!(public_root(None, &headers(&[("host", "[::1]:8042")]), plain(8080)), "http://[::1]:8042");
        assert_eq!(public_root(None, &headers(&[("host", "pacs")]), plain(80)), "http://pacs");
        assert_eq!(public_root(None, &headers(&[("host", "pacs")]), None), "http://pacs");
    }

    #[test]
    fn public_root_behind_a_proxy_follows_the_forwarded_headers() {
        let proxied = headers(&[("host", "pacs"), ("x-forwarded-proto", "https")]);
        assert_eq!(public_root(None, &proxied, plain(8080)), "https://pacs");
        let forwarded = headers(&[("host", "internal:8080"), ("x-forwarded-host", "pacs.example.org")]);
        assert_eq!(public_root(None, &forwarded, plain(8080)), "http://pacs.example.org");
        assert_eq!(public_root(Some("https://pacs.example.org/"), &proxied, plain(8080)), "https://pacs.example.org");
    }
}
