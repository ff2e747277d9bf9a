//! The built-in zero-footprint web viewer.
//!
//! Plain HTML, CSS and JavaScript modules from `web/`, embedded in the binary
//! and served at `/` (the page) and `/viewer/{path}` (its assets). The viewer
//! talks to the server only through DICOMweb and the documented REST API, so
//! this crate knows nothing of the archive: it only serves bytes.
//!
//! Every response carries a strong ETag (answered with 304 to a matching
//! `If-None-Match`), `Cache-Control: no-cache` (revalidate each time, so a new
//! binary is picked up at once) and a strict Content-Security-Policy.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The HTTP paths this crate serves (documented in the server's OpenAPI document).
pub const PATHS: [&str; 2] = ["/", "/viewer/{path}"];

/// The DICOMweb base path the page uses unless told otherwise.
pub const DEFAULT_DICOMWEB_BASE: &str = "/dicom-web";

/// Only the page's own files; images from blob: and data: URLs (canvas snapshots,
/// thumbnails); no inline script or style, no plug-ins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
     script-src 'self'; style-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The placeholder in index.html replaced by the configured DICOMweb base path.
const BASE_PLACEHOLDER: &str = "content=\"/dicom-web\" data-haneul-base";

/// Every file of `web/`: name and bytes. `web_files_are_all_listed` keeps the list complete.
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../web/index.html")),
    ("viewer.css", include_bytes!("../web/viewer.css")),
    ("app.js", include_bytes!("../web/app.js")),
    ("dicomweb.js", include_bytes!("../web/dicomweb.js")),
    ("dicom.js", include_bytes!("../web/dicom.js")),
    ("studylist.js", include_bytes!("../web/studylist.js")),
    ("timeline.js", include_bytes!("../web/timeline.js")),
    ("viewport.js", include_bytes!("../web/viewport.js")),
    ("stack.js", include_bytes!("../web/stack.js")),
    ("pixels.js", include_bytes!("../web/pixels.js")),
    ("tools.js", include_bytes!("../web/tools.js")),
    ("attributes.js", include_bytes!("../web/attributes.js")),
    ("signin.js", include_bytes!("../web/signin.js")),
    ("audit.js", include_bytes!("../web/audit.js")),
    ("replication.js", include_bytes!("../web/replication.js")),
    ("favicon.svg", include_bytes!("../web/favicon.svg")),
];

struct Asset {
    body: Vec<u8>,
    content_type: &'static str,
    etag: HeaderValue,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

fn asset(name: &str, body: Vec<u8>) -> Asset {
    let etag = format!("\"{:016x}-{:x}\"", fnv1a(&body), body.len());
    Asset { content_type: content_type(name), etag: HeaderValue::from_str(&etag).expect("an ETag is ASCII"), body }
}

fn assets(dicomweb_base: &str) -> HashMap<&'static str, Asset> {
    let base = dicomweb_base.trim_end_matches('/');
    // The base path goes into an HTML attribute: keep only harmless characters.
    let base: String =
        base.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~')).collect();
    FILES
        .iter()
        .map(|(name, bytes)| {
            let body = if *name == "index.html" {
                let text = String::from_utf8_lossy(bytes)
                    .replace(BASE_PLACEHOLDER, &format!("content=\"{base}\" data-haneul-base"));
                text.into_bytes()
            } else {
                bytes.to_vec()
            };
            (*name, asset(name, body))
        })
        .collect()
}

fn respond(asset: &Asset, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if none_match(request, &asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (StatusCode::OK, headers, asset.body.clone()).into_response()
}

/// Whether `If-None-Match` lists this ETag (or `*`); weak comparison, as RFC 9110 asks.
fn none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.to_str().unwrap_or("");
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

fn not_found(path: &str) -> Response {
    let body = format!("{{\"error\":\"no viewer file {}\",\"status\":404}}", path.escape_default());
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The viewer's routes, for a server whose DICOMweb service is at `/dicom-web`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    router_with_base(DEFAULT_DICOMWEB_BASE)
}

/// The viewer's routes; the page is told to find DICOMweb at `dicomweb_base`.
pub fn router_with_base<S: Clone + Send + Sync + 'static>(dicomweb_base: &str) -> Router<S> {
    let assets = Arc::new(assets(dicomweb_base));
    let page = Arc::clone(&assets);
    Router::new()
        .route("/", get(move |headers: HeaderMap| async move { respond(&page["index.html"], &headers) }))
        .route(
            "/viewer/{path}",
            get(move |Path(path): Path<String>, headers: HeaderMap| async move {
                match assets.get(path.as_str()) {
                    Some(asset) => respond(asset, &headers),
                    None => not_found(&path),
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let response = router.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    #[test]
    fn web_files_are_all_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(name, _)| name.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "web/ and FILES differ");
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, bytes) in FILES {
            let text = String::from_utf8_lossy(bytes);
            for line in text.lines().filter(|line| line.trim_start().starts_with("import ")) {
                let Some(from) = line.split("from '").nth(1).and_then(|rest| rest.split('\'').next()) else { continue };
                let target = from.trim_start_matches("./");
                assert!(FILES.iter().any(|(file, _)| *file == target), "{name} imports {from}, which is not served");
            }
        }
    }

    /// The page's CSP allows no inline script or style and no form actions:
    /// nothing in the page may need them.
    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        let page = String::from_utf8_lossy(FILES.iter().find(|(name, _)| *name == "index.html").unwrap().1).to_string();
        let lower = page.to_ascii_lowercase();
        for (at, _) in lower.match_indices("<script") {
            let tag = &lower[at..at + lower[at..].find('>').unwrap()];
            assert!(tag.contains(" src="), "an inline script: {tag}");
        }
        assert!(!lower.contains("<style"), "an inline style element");
        assert!(!lower.contains(" style="), "an inline style attribute");
        assert!(!lower.contains(" action="), "a form action (the policy has form-action 'none')");
        for tag in lower.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            let handler =
                tag.split_whitespace().skip(1).any(|attribute| attribute.starts_with("on") && attribute.contains('='));
            assert!(!handler, "an inline handler: <{tag}>");
        }
        assert!(lower.contains("id=\"signin-form\"") && lower.contains("id=\"password-form\""), "the sign-in forms");
    }

    /// Nothing patient-identifying, and no credential, goes into browser storage:
    /// no module touches it (the session cookie is HttpOnly, the CSRF token stays in memory).
    #[test]
    fn no_module_uses_browser_storage() {
        for (name, bytes) in FILES.iter().filter(|(name, _)| name.ends_with(".js")) {
            let text = String::from_utf8_lossy(bytes);
            for api in ["localStorage", "sessionStorage", "indexedDB", "document.cookie", "caches."] {
                assert!(!text.contains(api), "{name} uses {api}");
            }
        }
    }

    /// Every state-changing request the viewer makes goes through the one
    /// request function, which adds X-CSRF-Token.
    #[test]
    fn only_the_request_function_calls_fetch() {
        for (name, bytes) in FILES.iter().filter(|(name, _)| name.ends_with(".js")) {
            let text = String::from_utf8_lossy(bytes);
            let calls =
                text.matches("fetch(").count() - text.matches(".fetch(").count() - text.matches("async fetch(").count();
            let expected = usize::from(*name == "dicomweb.js");
            assert_eq!(calls, expected, "{name} calls fetch() {calls} times");
        }
        let api = String::from_utf8_lossy(FILES.iter().find(|(name, _)| *name == "dicomweb.js").unwrap().1).to_string();
        assert!(api.contains("headers['X-CSRF-Token'] = this.csrf"), "dicomweb.js sends the CSRF token");
    }

    #[tokio::test]
    async fn serves_the_page_and_assets_with_types_etags_and_policy() {
        let router: Router = router();
        let (status, headers, body) = get_path(router.clone(), "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'self'"));
        assert!(String::from_utf8(body).unwrap().contains("viewer/app.js"));
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");

        let (status, headers, body) = get_path(router.clone(), "/", Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(headers[header::ETAG], etag.as_str());
        let (status, _, _) = get_path(router.clone(), "/", Some("\"other\"")).await;
        assert_eq!(status, StatusCode::OK);

        let (status, headers, _) = get_path(router.clone(), "/viewer/app.js", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        let (status, headers, _) = get_path(router.clone(), "/viewer/viewer.css", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
        let (status, _, _) = get_path(router, "/viewer/nothing.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_page_is_told_the_dicomweb_base_path() {
        let (_, _, body) = get_path(router_with_base("/pacs/web/"), "/", None).await;
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains("content=\"/pacs/web\" data-haneul-base"), "{page}");
        let (_, _, body) = get_path(router_with_base("/x\"><script>"), "/", None).await;
        assert!(!String::from_utf8(body).unwrap().contains("<script>\""));
    }
}
