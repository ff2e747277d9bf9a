//! Who is asking, and whether they may: credentials on every request,
//! sign-in sessions for the viewer, and the permission each route needs.
//!
//! [`authenticate`] runs before routing and turns credentials into a
//! [`Principal`]: an API token (`Authorization: Bearer hnl_…`, or Basic with
//! the token as password for clients that only know Basic), an OIDC JWT
//! (`Bearer` with a JWT), or the session cookie of a viewer sign-in (with
//! `X-CSRF-Token` on state-changing requests). Credentials that are presented
//! and wrong end the request with 401 — they never fall back to anonymous.
//! [`gate`] runs per route with that route's [`Access`] and answers 401
//! without a principal and 403 without the permission (recorded in the audit
//! trail). Passwords go only to `POST /api/login`: Argon2id per request
//! would make every request cost tens of milliseconds.

mod lockout;
mod oidc;
pub mod sessions;

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use haneul_core::audit::Action;
use haneul_core::users::{AuthFailure, Permission, PermissionMatrix, Role, User, UsersError, TOKEN_PREFIX};
use serde::{Deserialize, Serialize};

pub use oidc::OidcConfig;
use sessions::{Lookup, Sessions};

use crate::error::ApiError;
use crate::{RequestContext, WebState};

/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How often a session re-reads its account (disabled, role changed).
const ACCOUNT_RECHECK: Duration = Duration::from_secs(30);

/// Settings of authentication on the HTTP edge.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The role of requests without credentials; `None` (the default): 401.
    pub anonymous_role: Option<Role>,
    /// A session ends after this long without a request…
    pub session_idle: Duration,
    /// …or this long after sign-in.
    pub session_lifetime: Duration,
    /// Failed sign-ins before an account is locked (0: never).
    pub max_failed_logins: u32,
    /// How long a lockout lasts.
    pub lockout: Duration,
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_role: None,
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            max_failed_logins: 5,
            lockout: Duration::from_secs(15 * 60),
            oidc: None,
        }
    }
}

/// What a route asks of the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-in, the viewer's page and its static files).
    Public,
    /// Any signed-in user, even one who must change their password first.
    SignedIn,
    /// A signed-in user whose role has the permission.
    Needs(Permission),
}

/// How a principal proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Session,
    Token,
    Oidc,
    Anonymous,
}

/// The user a request acts as.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// Sites the user is limited to; empty: every site.
    pub sites: Vec<String>,
    pub method: AuthMethod,
    pub must_change_password: bool,
}

/// Authentication state shared by the handlers.
pub(crate) struct Auth {
    config: AuthConfig,
    matrix: PermissionMatrix,
    sessions: Sessions,
    lockout: lockout::Lockout,
    oidc: Option<oidc::Oidc>,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Auth {
        Auth {
            matrix: PermissionMatrix::default(),
            sessions: Sessions::new(config.session_idle, config.session_lifetime),
            lockout: lockout::Lockout::new(config.max_failed_logins, config.lockout),
            oidc: config.oidc.clone().map(oidc::Oidc::new),
            config,
        }
    }
}

/// Why credentials were refused.
struct Refusal {
    status: StatusCode,
    message: String,
    clear_cookie: bool,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal { status: StatusCode::UNAUTHORIZED, message: message.into(), clear_cookie: false }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status, &self.message);
        if self.clear_cookie {
            response.headers_mut().append(header::SET_COOKIE, clear_cookie());
        }
        response
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    tracing::info!(status = status.as_u16(), error = message, "request refused");
    let mut response =
        (status, Json(serde_json::json!({ "error": message, "status": status.as_u16() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"haneul\""));
    }
    response
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("haneul_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn client_ip(ctx: &RequestContext) -> Option<IpAddr> {
    ctx.origin.address.parse::<std::net::SocketAddr>().map(|address| address.ip()).ok()
}

fn failure_reason(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::UnknownUser => "unknown user",
        AuthFailure::WrongPassword => "wrong password",
        AuthFailure::Disabled => "account disabled",
        AuthFailure::MalformedToken => "malformed token",
        AuthFailure::UnknownToken => "unknown token",
        AuthFailure::WrongSecret => "wrong token secret",
        AuthFailure::ExpiredToken => "expired token",
        AuthFailure::RevokedToken => "revoked token",
    }
}

/// Record a refused credential in the audit trail.
fn audit_failure(state: &WebState, ctx: &RequestContext, actor: &str, method: &str, reason: &str) {
    let entry = haneul_core::audit::Entry::new(
        Action::LoginFailed,
        actor,
        haneul_core::audit::source_host(&ctx.origin.address),
        &ctx.id,
    )
    .failed(reason)
    .detail("method", method);
    state.archive().audit(entry);
}

/// Middleware: establish who the request acts as (see the module docs).
pub(crate) async fn authenticate(State(state): State<WebState>, mut request: Request, next: Next) -> Response {
    let Some(ctx) = request.extensions().get::<RequestContext>().cloned() else {
        return next.run(request).await;
    };
    let principal = match identify(&state, &ctx, request.method(), request.headers()).await {
        Ok(principal) => principal,
        // A cookie of a session that has ended is no credential at all: public
        // resources (the viewer's page, sign-in) still answer, protected ones
        // refuse with the reason, and the cookie is cleared either way.
        Err(refusal) if refusal.clear_cookie => {
            request.extensions_mut().insert(EndedSession(refusal.message));
            let mut response = next.run(request).await;
            response.headers_mut().append(header::SET_COOKIE, clear_cookie());
            return response;
        }
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(principal) = principal {
        if let Some(ctx) = request.extensions_mut().get_mut::<RequestContext>() {
            ctx.origin.actor = principal.user.clone();
            // A user limited to sites sees only their data, and what a user
            // of one site stores belongs to it.
            ctx.origin.scope.clone_from(&principal.sites);
            if let [site] = principal.sites.as_slice() {
                ctx.origin.site.clone_from(site);
            }
            ctx.principal = Some(principal);
        }
    }
    next.run(request).await
}

async fn identify(
    state: &WebState,
    ctx: &RequestContext,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Principal>, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Refusal::unauthorized("malformed Authorization header"))?;
        return from_authorization(state, ctx, value).await.map(Some);
    }
    if let Some(cookie) = sessions::cookie_value(headers) {
        return from_session(state, ctx, &cookie, method, headers).await.map(Some);
    }
    Ok(state.auth().config.anonymous_role.map(|role| Principal {
        user: "anonymous".into(),
        role,
        sites: Vec::new(),
        method: AuthMethod::Anonymous,
        must_change_password: false,
    }))
}

async fn from_authorization(state: &WebState, ctx: &RequestContext, value: &str) -> Result<Principal, Refusal> {
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if credentials.starts_with(TOKEN_PREFIX) {
            return from_token(state, ctx, credentials, None).await;
        }
        return from_jwt(state, ctx, credentials).await;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| Refusal::unauthorized("malformed Basic credentials"))?;
        let (user, secret) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
        if !secret.starts_with(TOKEN_PREFIX) {
            audit_failure(state, ctx, user, "basic", "password in Basic authentication");
            return Err(Refusal::unauthorized(
                "Basic authentication takes an API token as the password; sign in at /api/login for a session",
            ));
        }
        return from_token(state, ctx, secret, Some(user)).await;
    }
    Err(Refusal::unauthorized(format!("unsupported authorization scheme {scheme:?}; use Bearer")))
}

async fn from_token(
    state: &WebState,
    ctx: &RequestContext,
    token: &str,
    basic_user: Option<&str>,
) -> Result<Principal, Refusal> {
    let users = state.archive().users();
    let verified = match users.cached_token(token) {
        Some(verified) => Ok(verified),
        None => {
            let presented = token.to_string();
            tokio::task::spawn_blocking(move || users.verify_token(&presented))
                .await
                .map_err(|_| Refusal::unauthorized("token check failed"))?
        }
    };
    let (user, token) = match verified {
        Ok(verified) => verified,
        Err(UsersError::Unauthenticated(failure)) => {
            audit_failure(state, ctx, basic_user.unwrap_or("unknown"), "token", failure_reason(failure));
            return Err(Refusal::unauthorized("invalid credentials"));
        }
        Err(error) => {
            tracing::error!(%error, "token check failed");
            return Err(Refusal {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                ..Refusal::unauthorized("token check failed")
            });
        }
    };
    if basic_user.is_some_and(|name| !name.is_empty() && !name.eq_ignore_ascii_case(&user.name)) {
        audit_failure(state, ctx, basic_user.unwrap_or_default(), "token", "token of another user");
        return Err(Refusal::unauthorized("invalid credentials"));
    }
    tracing::debug!(user = %user.name, token = %token.id, "token accepted");
    Ok(Principal {
        user: user.name,
        role: user.role,
        sites: user.sites,
        method: AuthMethod::Token,
        must_change_password: false,
    })
}

async fn from_jwt(state: &WebState, ctx: &RequestContext, jwt: &str) -> Result<Principal, Refusal> {
    let Some(oidc) = state.auth().oidc.as_ref() else {
        audit_failure(state, ctx, "unknown", "bearer", "unknown bearer token (OIDC is not configured)");
        return Err(Refusal::unauthorized("invalid credentials"));
    };
    match oidc.verify(jwt).await {
        Ok(identity) => Ok(Principal {
            user: identity.user,
            role: identity.role,
            sites: identity.sites,
            method: AuthMethod::Oidc,
            must_change_password: false,
        }),
        Err(reason) => {
            tracing::info!(%reason, "OIDC token refused");
            audit_failure(state, ctx, "unknown", "oidc", &reason);
            Err(Refusal::unauthorized("invalid credentials"))
        }
    }
}

async fn from_session(
    state: &WebState,
    ctx: &RequestContext,
    cookie: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, Refusal> {
    let auth = state.auth();
    let expired = |message: &str| Refusal { clear_cookie: true, ..Refusal::unauthorized(message) };
    let mut session = match auth.sessions.lookup(cookie) {
        Lookup::Valid(session) => session,
        Lookup::Expired { user, reason } => {
            let entry = haneul_core::audit::Entry::new(
                Action::Logout,
                &user,
                haneul_core::audit::source_host(&ctx.origin.address),
                &ctx.id,
            )
            .detail("reason", reason);
            state.archive().audit(entry);
            return Err(expired("the session has ended; sign in again"));
        }
        Lookup::Unknown => return Err(expired("no such session; sign in again")),
    };
    if session.checked.elapsed() >= ACCOUNT_RECHECK {
        let users = state.archive().users();
        let name = session.user.clone();
        let account = tokio::task::spawn_blocking(move || users.user(&name)).await;
        match account {
            Ok(Ok(Some(user))) if !user.disabled => {
                auth.sessions.refresh(cookie, &user);
                session.role = user.role;
                session.sites = user.sites;
                session.must_change_password = user.must_change_password;
            }
            Ok(Ok(_)) => {
                auth.sessions.remove_user(&session.user);
                audit_failure(state, ctx, &session.user, "session", "account disabled or removed");
                return Err(expired("the account is disabled"));
            }
            _ => return Err(Refusal::unauthorized("cannot check the account")),
        }
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let presented = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !constant_time_eq(presented, session.csrf_token.as_bytes()) {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                message: format!("missing or wrong {CSRF_HEADER} header"),
                clear_cookie: false,
            });
        }
    }
    Ok(Principal {
        user: session.user,
        role: session.role,
        sites: session.sites,
        method: AuthMethod::Session,
        must_change_password: session.must_change_password,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a presented session cookie did not count (a request extension).
#[derive(Clone)]
struct EndedSession(String);

/// Per-route middleware state: the access each method needs.
#[derive(Clone)]
pub(crate) struct Gate {
    pub state: WebState,
    pub methods: &'static [(&'static str, Access)],
}

/// Middleware: refuse requests without what the route needs.
pub(crate) async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let method = if request.method() == Method::HEAD { "GET" } else { request.method().as_str() };
    let access =
        gate.methods.iter().find(|(name, _)| *name == method).map(|(_, access)| *access).unwrap_or(Access::SignedIn);
    if access == Access::Public {
        return next.run(request).await;
    }
    let Some(ctx) = request.extensions().get::<RequestContext>() else {
        return error_response(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let Some(principal) = ctx.principal.as_ref() else {
        let message = request.extensions().get::<EndedSession>().map_or("authentication required", |ended| &ended.0);
        return error_response(StatusCode::UNAUTHORIZED, message);
    };
    let Access::Needs(permission) = access else {
        return next.run(request).await;
    };
    if principal.must_change_password {
        return error_response(StatusCode::FORBIDDEN, "change your password first (POST /api/password)");
    }
    if !gate.state.auth().matrix.allows(principal.role, permission) {
        let entry = ctx
            .audit_entry(Action::PermissionDenied)
            .failed(format!("the {} role may not {}", principal.role, permission.as_str()))
            .detail("permission", permission.as_str())
            .detail("request", format!("{} {}", request.method(), request.uri().path()));
        gate.state.archive().audit(entry);
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("the {} role may not {}", principal.role, permission.as_str()),
        );
    }
    next.run(request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    user: String,
    password: String,
}

/// What a signed-in client learns about its session.
#[derive(Serialize)]
struct SessionInfo<'a> {
    user: &'a str,
    role: Role,
    sites: &'a [String],
    method: AuthMethod,
    must_change_password: bool,
    permissions: Vec<Permission>,
    /// Only for sessions: send it back in `X-CSRF-Token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_seconds: Option<u64>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::BadRequest(format!("invalid JSON body: {error}")))
}

fn is_https(ctx: &RequestContext) -> bool {
    ctx.public_root.starts_with("https://")
}

/// `POST /api/login`: check a password and open a session.
pub(crate) async fn login(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: LoginRequest = json_body(&body)?;
    let auth = state.auth();
    let address = client_ip(&ctx);
    let source = haneul_core::audit::source_host(&ctx.origin.address);
    if let Some(wait) = auth.lockout.locked_for(&request.user, address) {
        audit_failure(&state, &ctx, &request.user, "password", "locked out after repeated failures");
        let seconds = wait.as_secs().max(1);
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed sign-ins; try again in {seconds} s"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let users = state.archive().users();
    let (name, password) = (request.user.clone(), request.password);
    let verified = tokio::task::spawn_blocking(move || users.verify_password(&name, &password))
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let user = match verified {
        Ok(user) => user,
        Err(UsersError::Unauthenticated(failure)) => {
            auth.lockout.failed(&request.user, address);
            audit_failure(&state, &ctx, &request.user, "password", failure_reason(failure));
            return Ok(error_response(StatusCode::UNAUTHORIZED, "invalid user name or password"));
        }
        Err(error) => return Err(ApiError::Internal(error.to_string())),
    };
    auth.lockout.succeeded(&request.user, address);
    let (cookie, session) = auth.sessions.create(&user);
    state
        .archive()
        .audit(haneul_core::audit::Entry::new(Action::Login, &user.name, source, &ctx.id).detail("method", "password"));
    let principal = principal_of(&user, AuthMethod::Session);
    let mut response = Json(session_info(&state, &principal, Some(&session.csrf_token))).into_response();
    let secure = if is_https(&ctx) { "; Secure" } else { "" };
    let max_age = auth.sessions.lifetime().as_secs();
    let set_cookie =
        format!("{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", sessions::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn principal_of(user: &User, method: AuthMethod) -> Principal {
    Principal {
        user: user.name.clone(),
        role: user.role,
        sites: user.sites.clone(),
        method,
        must_change_password: user.must_change_password,
    }
}

fn session_info<'a>(state: &WebState, principal: &'a Principal, csrf_token: Option<&'a str>) -> SessionInfo<'a> {
    let auth = state.auth();
    SessionInfo {
        user: &principal.user,
        role: principal.role,
        sites: &principal.sites,
        method: principal.method,
        must_change_password: principal.must_change_password,
        permissions: auth.matrix.permissions(principal.role).iter().collect(),
        csrf_token,
        idle_timeout_seconds: csrf_token.map(|_| auth.sessions.idle().as_secs()),
    }
}

fn signed_in(ctx: &RequestContext) -> Result<&Principal, ApiError> {
    ctx.principal.as_ref().ok_or_else(|| ApiError::BadRequest("not signed in".into()))
}

/// `GET /api/session`: who the request acts as (and the CSRF token of a session).
pub(crate) async fn session(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = signed_in(&ctx)?;
    let csrf = match principal.method {
        AuthMethod::Session => {
            sessions::cookie_value(&headers).and_then(|cookie| match state.auth().sessions.lookup(&cookie) {
                Lookup::Valid(session) => Some(session.csrf_token),
                _ => None,
            })
        }
        _ => None,
    };
    let mut response = Json(session_info(&state, principal, csrf.as_deref())).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /api/logout`: end the session (the cookie stops working at once).
pub(crate) async fn logout(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = signed_in(&ctx)?;
    if let Some(cookie) = sessions::cookie_value(&headers) {
        if state.auth().sessions.remove(&cookie).is_some() {
            state.archive().audit(ctx.audit_entry(Action::Logout).detail("reason", "logout"));
        }
    }
    tracing::info!(user = %principal.user, "signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    current_password: String,
    new_password: String,
}

/// `POST /api/password`: a user changes their own password.
pub(crate) async fn password(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = signed_in(&ctx)?.clone();
    if !matches!(principal.method, AuthMethod::Session | AuthMethod::Token) {
        return Err(ApiError::BadRequest(
            "this account's password is kept by the identity provider or does not exist".into(),
        ));
    }
    let request: PasswordRequest = json_body(&body)?;
    let users = state.archive().users();
    let name = principal.user.clone();
    let changed = tokio::task::spawn_blocking(move || {
        users.change_own_password(&name, &request.current_password, &request.new_password)?;
        users.user(&name)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?;
    let entry =
        ctx.audit_entry(Action::ConfigChange).detail("change", "password").detail("user", principal.user.as_str());
    match changed {
        Ok(user) => {
            state.archive().audit(entry);
            if let (Some(user), Some(cookie)) = (user, sessions::cookie_value(&headers)) {
                state.auth().sessions.refresh(&cookie, &user);
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(UsersError::Unauthenticated(_)) => {
            state.archive().audit(entry.failed("wrong current password"));
            Ok(error_response(StatusCode::FORBIDDEN, "the current password is wrong"))
        }
        Err(UsersError::Invalid(message)) => Err(ApiError::BadRequest(message)),
        Err(error) => Err(ApiError::Internal(error.to_string())),
    }
}
