//! Authentication and authorization of the HTTP edge, in process.
//!
//! The route table is checked against the OpenAPI document: every documented
//! operation refuses anonymous requests (401) unless it is documented as
//! public, and every role lacking the operation's documented permission
//! (`x-haneul-permission`) gets 403 — so a new route without a check, or
//! documented without a permission, fails here. Then sign-in sessions (CSRF,
//! logout, timeouts, lockout, password change), API-token revocation and
//! OIDC tokens against a JWKS served over HTTP from a key made here.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use haneul_core::users::{NewUser, Role};
use haneul_core::{Permission, PermissionMatrix};
use haneul_dicomweb::{AuthConfig, OidcConfig, WebConfig};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

mod support;

use support::{Harness, Reply};

impl Reply {
    /// The session cookie set by this reply (`name=value`).
    fn cookie(&self) -> String {
        let set = self.headers.get(header::SET_COOKIE).expect("a Set-Cookie header").to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }
}

impl Harness {
    fn new(auth: AuthConfig) -> Harness {
        Harness::with_config(WebConfig { auth, ..WebConfig::default() })
    }

    fn add_user(&self, name: &str, role: Role, must_change_password: bool) {
        let new = NewUser { name: name.into(), role, password: PASSWORD.into(), sites: vec![], must_change_password };
        self.archive.users().create_user(&new).expect("creating a user");
    }

    fn token(&self, user: &str) -> (String, String) {
        let created = self.archive.users().create_token(user, "tests", None).expect("creating a token");
        (created.token.id, created.secret)
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(body.to_string())).expect("request")).await
    }

    async fn login(&self, user: &str, password: &str) -> Reply {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        self.call("POST", "/api/login", &[("content-type", "application/json")], &body).await
    }
}

fn openapi() -> Value {
    serde_json::from_str(haneul_dicomweb::OPENAPI).expect("openapi.json is JSON")
}

/// Every documented operation: method, a concrete path, and its documented
/// permission (`None`: public).
fn operations() -> Vec<(Method, String, Option<String>)> {
    let document = openapi();
    let mut operations = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else { continue };
            let public = operation.get("security").and_then(Value::as_array).is_some_and(Vec::is_empty);
            let permission = operation.get("x-haneul-permission").and_then(Value::as_str).map(str::to_string);
            assert!(
                public || permission.is_some(),
                "{method} {template}: neither public (security: []) nor documented with x-haneul-permission"
            );
            let path = template
                .replace("{study}", "1.2.826.0.1.3680043.2.1125.1")
                .replace("{series}", "1.2.826.0.1.3680043.2.1125.2")
                .replace("{instance}", "1.2.826.0.1.3680043.2.1125.3")
                .replace("{frames}", "1")
                .replace("{path}", "7FE00010");
            operations.push((method, path, if public { None } else { permission }));
        }
    }
    assert!(operations.len() > 30, "the OpenAPI document lists the whole surface");
    operations
}

fn permission(name: &str) -> Option<Permission> {
    serde_json::from_value(Value::String(name.into())).ok()
}

#[tokio::test]
async fn every_documented_operation_refuses_anonymous_requests() {
    let harness = Harness::new(AuthConfig::default());
    for (method, path, permission) in operations() {
        if path == "/" || path.starts_with("/viewer/") {
            continue; // the viewer's files are merged in by `haneul serve`, and public
        }
        let reply = harness.call(method.as_str(), &path, &[], "").await;
        match permission {
            Some(_) => {
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", reply.text());
                assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"haneul\"", "{method} {path}");
                assert!(reply.json()["error"].is_string(), "{method} {path}: a JSON error");
            }
            None => assert_ne!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path} is documented as public"),
        }
    }
    // Wrong credentials never fall back to anonymous access.
    for authorization in ["Bearer hnl_0011223344556677_wrong", "Bearer not.a.jwt", "Basic a2ltOnNlY3JldA==", "Digest x"]
    {
        let reply = harness.call("GET", "/dicom-web/studies", &[("authorization", authorization)], "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization}");
    }
}

#[tokio::test]
async fn roles_without_the_documented_permission_are_refused_with_403() {
    let harness = Harness::new(AuthConfig::default());
    let matrix = PermissionMatrix::default();
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let name = format!("{role}-user");
        harness.add_user(&name, role, false);
        tokens.push((role, format!("Bearer {}", harness.token(&name).1)));
    }
    let mut checked = 0;
    for (method, path, documented) in operations() {
        let Some(documented) = documented else { continue };
        for (role, authorization) in &tokens {
            let allowed = match documented.as_str() {
                "signed-in" => true,
                name => matrix.allows(*role, permission(name).unwrap_or_else(|| panic!("{name:?} is no permission"))),
            };
            let reply = harness.call(method.as_str(), &path, &[("authorization", authorization)], "").await;
            if allowed {
                assert!(
                    reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                    "{role} may {documented}: {method} {path} answered {} {}",
                    reply.status,
                    reply.text()
                );
            } else {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{role} may not {documented}: {method} {path}");
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} checks");
}

#[tokio::test]
async fn sessions_need_csrf_for_changes_and_end_at_logout() {
    let harness = Harness::new(AuthConfig::default());
    harness.add_user("kim", Role::Admin, false);

    let wrong = harness.login("kim", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let unknown = harness.login("nobody", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], unknown.json()["error"], "the answer does not tell which was wrong");

    let signed_in = harness.login("kim", PASSWORD).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text());
    let set_cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no Secure flag over plain HTTP (it would never be sent back)");
    let cookie = signed_in.cookie();
    let csrf = signed_in.json()["csrf_token"].as_str().expect("a CSRF token").to_string();
    assert_eq!(signed_in.json()["role"], "admin");

    let session = harness.call("GET", "/api/session", &[("cookie", &cookie)], "").await;
    assert_eq!(session.status, StatusCode::OK);
    assert_eq!(session.json()["user"], "kim");
    assert_eq!(session.json()["csrf_token"], csrf.as_str(), "a reloaded page gets the token back");
    assert_eq!(harness.call("GET", "/dicom-web/studies", &[("cookie", &cookie)], "").await.status, StatusCode::OK);

    let path = "/api/studies/1.2.3.4";
    let forged = harness.call("DELETE", path, &[("cookie", &cookie)], "").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "a change without the CSRF token");
    let wrong_token = harness.call("DELETE", path, &[("cookie", &cookie), ("x-csrf-token", "guess")], "").await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    let with_token = harness.call("DELETE", path, &[("cookie", &cookie), ("x-csrf-token", &csrf)], "").await;
    assert_eq!(with_token.status, StatusCode::NOT_FOUND, "authorized, and nothing to delete: {}", with_token.text());

    let logout = harness.call("POST", "/api/logout", &[("cookie", &cookie), ("x-csrf-token", &csrf)], "").await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let after = harness.call("GET", "/dicom-web/studies", &[("cookie", &cookie)], "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "the old cookie no longer works");
}

#[tokio::test]
async fn idle_and_lifetime_timeouts_end_sessions() {
    for auth in [
        AuthConfig { session_idle: Duration::ZERO, ..AuthConfig::default() },
        AuthConfig { session_lifetime: Duration::ZERO, ..AuthConfig::default() },
    ] {
        let harness = Harness::new(auth);
        harness.add_user("kim", Role::Clinician, false);
        let cookie = harness.login("kim", PASSWORD).await.cookie();
        let reply = harness.call("GET", "/dicom-web/studies", &[("cookie", &cookie)], "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.text().contains("session has ended"), "{}", reply.text());
    }
}

#[tokio::test]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let harness = Harness::new(AuthConfig { max_failed_logins: 3, ..AuthConfig::default() });
    harness.add_user("kim", Role::Clinician, false);
    harness.add_user("lee", Role::Clinician, false);
    for _ in 0..3 {
        assert_eq!(harness.login("kim", "guess-guess-guess").await.status, StatusCode::UNAUTHORIZED);
    }
    let locked = harness.login("kim", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{}", locked.text());
    let retry: u64 = locked.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry > 800 && retry <= 900, "{retry}");
    assert_eq!(harness.login("lee", PASSWORD).await.status, StatusCode::OK, "other accounts sign in");
}

#[tokio::test]
async fn a_user_who_must_change_the_password_can_do_only_that_first() {
    let harness = Harness::new(AuthConfig::default());
    harness.add_user("admin2", Role::Admin, true);
    let signed_in = harness.login("admin2", PASSWORD).await;
    assert_eq!(signed_in.json()["must_change_password"], true);
    let (cookie, csrf) = (signed_in.cookie(), signed_in.json()["csrf_token"].as_str().unwrap().to_string());
    let blocked = harness.call("GET", "/dicom-web/studies", &[("cookie", &cookie)], "").await;
    assert_eq!(blocked.status, StatusCode::FORBIDDEN);
    assert!(blocked.text().contains("change your password"), "{}", blocked.text());

    let change =
        |current: &str, new: &str| serde_json::json!({ "current_password": current, "new_password": new }).to_string();
    let headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str()), ("content-type", "application/json")];
    let wrong =
        harness.call("POST", "/api/password", &headers, &change("wrong password!", "a new long password")).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let short = harness.call("POST", "/api/password", &headers, &change(PASSWORD, "short")).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let changed = harness.call("POST", "/api/password", &headers, &change(PASSWORD, "a new long password")).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text());
    assert_eq!(harness.call("GET", "/dicom-web/studies", &[("cookie", &cookie)], "").await.status, StatusCode::OK);
    assert_eq!(harness.login("admin2", "a new long password").await.status, StatusCode::OK);
}

#[tokio::test]
async fn revoked_tokens_and_tokens_of_disabled_users_stop_working_at_once() {
    let harness = Harness::new(AuthConfig::default());
    harness.add_user("router", Role::Service, false);
    let (id, secret) = harness.token("router");
    let bearer = format!("Bearer {secret}");
    let harness = &harness;
    let studies = |authorization: String| async move {
        harness.call("GET", "/dicom-web/studies", &[("authorization", &authorization)], "").await.status
    };
    assert_eq!(studies(bearer.clone()).await, StatusCode::OK);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("router:{secret}")));
    assert_eq!(studies(basic).await, StatusCode::OK, "Basic with the token as password");
    let other = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("kim:{secret}")));
    assert_eq!(studies(other).await, StatusCode::UNAUTHORIZED, "the token belongs to another user");

    harness.archive.users().revoke_token(&id).expect("revoking");
    assert_eq!(studies(bearer).await, StatusCode::UNAUTHORIZED);

    let (_, secret) = harness.token("router");
    assert_eq!(studies(format!("Bearer {secret}")).await, StatusCode::OK);
    harness.archive.users().set_disabled("router", true).expect("disabling");
    assert_eq!(studies(format!("Bearer {secret}")).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let harness = Harness::new(AuthConfig::default());
    let reply = harness.call("GET", "/dicom-web/studies", &[], "").await;
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    assert_eq!(reply.headers["referrer-policy"], "no-referrer");
    let policy = reply.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"), "{policy}");
}

/// An RSA key made with the openssl CLI: (PKCS#1 PEM, JWK modulus).
fn rsa_key(dir: &std::path::Path, name: &str) -> (Vec<u8>, String) {
    let path = dir.join(format!("{name}.pem"));
    let made = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .expect("running openssl (install the openssl package)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let modulus = Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&path).output().unwrap();
    let hex = String::from_utf8(modulus.stdout).unwrap();
    let hex = hex.trim().strip_prefix("Modulus=").expect("openssl prints Modulus=…");
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    (std::fs::read(&path).unwrap(), URL_SAFE_NO_PAD.encode(bytes))
}

/// Serve `body` to every HTTP request on a loopback port; counts requests.
fn serve_jwks(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/realms/hospital/certs", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            count.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, served)
}

#[tokio::test]
async fn oidc_tokens_are_checked_against_the_issuers_jwks() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let dir = tempfile::tempdir().unwrap();
    let (key, modulus) = rsa_key(dir.path(), "idp");
    let (other_key, _) = rsa_key(dir.path(), "attacker");
    let jwks = serde_json::json!({ "keys": [{ "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": modulus, "e": "AQAB" }] });
    let (jwks_url, fetches) = serve_jwks(jwks.to_string());
    let oidc = OidcConfig {
        issuer: "https://idp.hospital.example/realms/hospital".into(),
        audiences: vec!["haneul".into()],
        jwks_url: Some(jwks_url),
        jwks_file: None,
        ca_file: None,
        user_claim: "preferred_username".into(),
        role_claim: "realm_access.roles".into(),
        role_map: [("pacs-reader".to_string(), Role::Clinician), ("pacs-admin".to_string(), Role::Admin)].into(),
        sites_claim: None,
        leeway: Duration::from_secs(5),
        refresh: Duration::from_secs(3600),
    };
    let harness = Harness::new(AuthConfig { oidc: Some(oidc), ..AuthConfig::default() });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |user: &str, role: &str, audience: &str, issuer: &str, expires: u64| {
        serde_json::json!({
            "iss": issuer, "aud": audience, "exp": expires, "iat": now,
            "preferred_username": user, "realm_access": { "roles": ["offline_access", role] },
        })
    };
    let issuer = "https://idp.hospital.example/realms/hospital";
    let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::RS256) };
    let sign = |claims: &Value, key: &[u8]| {
        format!("Bearer {}", encode(&header, claims, &EncodingKey::from_rsa_pem(key).unwrap()).unwrap())
    };
    let harness = &harness;
    let get = |authorization: String, method: &'static str, path: &'static str| async move {
        harness.call(method, path, &[("authorization", &authorization)], "").await
    };

    let reader = sign(&claims("dr.kim", "pacs-reader", "haneul", issuer, now + 300), &key);
    let session = get(reader.clone(), "GET", "/api/session").await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text());
    assert_eq!(session.json()["user"], "dr.kim");
    assert_eq!(session.json()["role"], "clinician");
    assert_eq!(session.json()["method"], "oidc");
    assert_eq!(get(reader.clone(), "GET", "/dicom-web/studies").await.status, StatusCode::OK);
    assert_eq!(get(reader, "DELETE", "/api/studies/1.2.3").await.status, StatusCode::FORBIDDEN, "mapped to clinician");
    let admin = sign(&claims("root", "pacs-admin", "haneul", issuer, now + 300), &key);
    assert_eq!(get(admin, "GET", "/api/aes").await.status, StatusCode::OK);

    let refused = [
        ("expired", sign(&claims("dr.kim", "pacs-reader", "haneul", issuer, now - 600), &key)),
        ("other audience", sign(&claims("dr.kim", "pacs-reader", "other-app", issuer, now + 300), &key)),
        ("other issuer", sign(&claims("dr.kim", "pacs-reader", "haneul", "https://evil", now + 300), &key)),
        ("unmapped role", sign(&claims("dr.kim", "nurse", "haneul", issuer, now + 300), &key)),
        ("forged signature", sign(&claims("dr.kim", "pacs-admin", "haneul", issuer, now + 300), &other_key)),
        ("HS256 with the public modulus", {
            let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) };
            let claims = claims("dr.kim", "pacs-admin", "haneul", issuer, now + 300);
            format!("Bearer {}", encode(&header, &claims, &EncodingKey::from_secret(modulus.as_bytes())).unwrap())
        }),
    ];
    for (case, authorization) in refused {
        let reply = get(authorization, "GET", "/dicom-web/studies").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {}", reply.text());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the JWKS is fetched once and kept");
}

#[tokio::test]
async fn a_stale_session_cookie_does_not_block_signing_in_again() {
    let harness = Harness::new(AuthConfig { session_idle: Duration::ZERO, ..AuthConfig::default() });
    harness.add_user("kim", Role::Clinician, false);
    let stale = harness.login("kim", PASSWORD).await.cookie();
    let body = serde_json::json!({ "user": "kim", "password": PASSWORD }).to_string();
    let again =
        harness.call("POST", "/api/login", &[("cookie", &stale), ("content-type", "application/json")], &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    let protected = harness.call("GET", "/dicom-web/studies", &[("cookie", "haneul_session=unknown")], "").await;
    assert_eq!(protected.status, StatusCode::UNAUTHORIZED);
    assert!(protected.text().contains("sign in again"), "{}", protected.text());
    assert!(protected.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"), "the cookie is cleared");
}
