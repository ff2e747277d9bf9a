//! OpenID Connect bearer tokens: JWTs from the hospital's identity provider,
//! checked against the issuer's published keys (JWKS).
//!
//! Only asymmetric signatures are accepted (RS*, PS*, ES*, EdDSA): a shared
//! secret or `none` would let anyone holding the public keys mint tokens.
//! Issuer, audience and expiry are required. The JWKS is fetched at first
//! use, again every `refresh`, and at once (at most every 30 s) when a token
//! names a key id it does not hold, which follows the provider's key rotation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use haneul_core::users::Role;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two fetches caused by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(30);

/// Settings of OIDC bearer-token checking.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Where the JWKS is fetched (http or https).
    pub jwks_url: Option<String>,
    /// A JWKS file instead of a URL (networks without access to the provider).
    pub jwks_file: Option<PathBuf>,
    /// PEM authorities for an https `jwks_url`; default: the system's bundle.
    pub ca_file: Option<PathBuf>,
    /// Claim naming the user.
    pub user_claim: String,
    /// Claim with the roles: a string or an array of strings; a dotted path
    /// reaches into objects (`realm_access.roles`).
    pub role_claim: String,
    /// Provider role → Haneul role; empty: the claim names Haneul roles.
    pub role_map: BTreeMap<String, Role>,
    /// Claim with the sites the user is limited to (string or array).
    pub sites_claim: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    pub refresh: Duration,
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OidcIdentity {
    pub user: String,
    pub role: Role,
    pub sites: Vec<String>,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

pub(crate) struct Oidc {
    config: OidcConfig,
    keys: Mutex<Option<Keys>>,
}

const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        Oidc { config, keys: Mutex::new(None) }
    }

    /// Check a token; the error is for the audit trail and the log.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| format!("malformed token: {error}"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(format!("signature algorithm {:?} is not accepted", header.alg));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| format!("token refused: {error}"))?
            .claims;
        self.identity(&claims)
    }

    fn identity(&self, claims: &Value) -> Result<OidcIdentity, String> {
        let user = claim(claims, &self.config.user_claim)
            .and_then(Value::as_str)
            .filter(|user| !user.trim().is_empty())
            .ok_or_else(|| format!("token has no {:?} claim", self.config.user_claim))?
            .to_string();
        let granted = strings(claim(claims, &self.config.role_claim));
        let roles: Vec<Role> = granted
            .iter()
            .filter_map(|name| match self.config.role_map.is_empty() {
                true => name.parse().ok(),
                false => self.config.role_map.get(name).copied(),
            })
            .collect();
        // With several roles, the first in Role::ALL's order (admin first) wins.
        let role = Role::ALL.into_iter().find(|role| roles.contains(role)).ok_or_else(|| {
            format!("token of {user:?} carries no role Haneul knows (claim {:?})", self.config.role_claim)
        })?;
        let sites = self.config.sites_claim.as_deref().map(|name| strings(claim(claims, name))).unwrap_or_default();
        Ok(OidcIdentity { user, role, sites })
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let mut keys = self.keys.lock().await;
        let stale = keys.as_ref().is_none_or(|keys| keys.fetched.elapsed() >= self.config.refresh);
        if stale {
            *keys = Some(Keys { set: self.fetch().await?, fetched: Instant::now() });
        }
        let find = |keys: &Option<Keys>| -> Option<DecodingKey> {
            let set = &keys.as_ref()?.set;
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => return None,
            };
            DecodingKey::from_jwk(jwk).ok()
        };
        if let Some(key) = find(&keys) {
            return Ok(key);
        }
        let fetched_recently = keys.as_ref().is_some_and(|keys| keys.fetched.elapsed() < MIN_REFETCH);
        if !stale && !fetched_recently {
            *keys = Some(Keys { set: self.fetch().await?, fetched: Instant::now() });
            if let Some(key) = find(&keys) {
                return Ok(key);
            }
        }
        Err(format!("no usable key {kid:?} in the issuer's JWKS"))
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let bytes = match (&self.config.jwks_file, &self.config.jwks_url) {
            (Some(path), _) => {
                tokio::fs::read(path).await.map_err(|error| format!("cannot read {}: {error}", path.display()))?
            }
            (None, Some(url)) => fetch_url(url, self.config.ca_file.as_ref()).await?,
            (None, None) => return Err("neither jwks_url nor jwks_file is set".into()),
        };
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|error| format!("the JWKS is not valid: {error}"))?;
        tracing::info!(keys = set.keys.len(), "fetched the OIDC issuer's keys");
        Ok(set)
    }
}

/// A claim by dotted path.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, name| value.get(name))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

async fn fetch_url(url: &str, ca_file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_url_now(url, ca_file))
        .await
        .map_err(|_| format!("fetching {url} took longer than {} s", FETCH_TIMEOUT.as_secs()))?
}

async fn fetch_url_now(url: &str, ca_file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let uri: axum::http::Uri = url.parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    if !https {
        return get(tcp, &uri).await;
    }
    let config = client_tls(ca_file)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|error| format!("{host:?} is not a server name: {error}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|error| format!("TLS with {host}:{port} failed: {error}"))?;
    get(tls, &uri).await
}

async fn get<S>(stream: S, uri: &axum::http::Uri) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake with {uri} failed: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let authority = uri.authority().map(|authority| authority.as_str()).unwrap_or_default();
    let request = axum::http::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(axum::http::header::HOST, authority)
        .header(axum::http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender.send_request(request).await.map_err(|error| format!("GET {uri} failed: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {uri} answered {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|error| format!("reading {uri} failed: {error}"))?;
    Ok(body.to_bytes().to_vec())
}

fn client_tls(ca_file: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = ca_file.cloned().unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    haneul_tls::client_config(&path).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(role_map: &[(&str, Role)]) -> Oidc {
        Oidc::new(OidcConfig {
            issuer: "https://idp".into(),
            audiences: vec!["haneul".into()],
            jwks_url: None,
            jwks_file: None,
            ca_file: None,
            user_claim: "preferred_username".into(),
            role_claim: "realm_access.roles".into(),
            role_map: role_map.iter().map(|(name, role)| (name.to_string(), *role)).collect(),
            sites_claim: Some("sites".into()),
            leeway: Duration::from_secs(60),
            refresh: Duration::from_secs(3600),
        })
    }

    #[test]
    fn roles_are_mapped_and_the_highest_wins() {
        let claims = serde_json::json!({
            "preferred_username": "kim",
            "realm_access": { "roles": ["offline_access", "pacs-reader", "pacs-admin"] },
            "sites": "seoul",
        });
        let oidc = oidc(&[("pacs-reader", Role::Clinician), ("pacs-admin", Role::Admin)]);
        assert_eq!(
            oidc.identity(&claims),
            Ok(OidcIdentity { user: "kim".into(), role: Role::Admin, sites: vec!["seoul".into()] })
        );
        let unmapped = serde_json::json!({ "preferred_username": "kim", "realm_access": { "roles": ["admin"] } });
        assert!(oidc.identity(&unmapped).unwrap_err().contains("no role"));
        // Without a map, the claim names our roles.
        assert_eq!(oidc_identity_role(&self::oidc(&[]), &unmapped), Some(Role::Admin));
    }

    fn oidc_identity_role(oidc: &Oidc, claims: &Value) -> Option<Role> {
        oidc.identity(claims).ok().map(|identity| identity.role)
    }

    #[test]
    fn a_token_without_a_user_is_refused() {
        let claims = serde_json::json!({ "realm_access": { "roles": ["clinician"] } });
        assert!(oidc(&[]).identity(&claims).unwrap_err().contains("preferred_username"));
    }
}
