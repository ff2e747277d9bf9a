//! The versions a bucket keeps of its objects (S3 `ListObjectVersions`),
//! which `object_store` does not list. A versioned bucket keeps every
//! version written, and Object Lock keeps each from deletion until its
//! retention ends; so the version Haneul wrote stays readable after someone
//! holding the keys replaced the object or hid it under a delete marker.
//! Requests are signed with the store's own credentials (static keys, web
//! identity or instance role alike).

use std::sync::Arc;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::{ClientConfigKey, ClientOptions};
use serde::Deserialize;

use crate::{Result, StorageError};

/// One version of an object (delete markers are not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The key, relative to the store's prefix.
    pub key: String,
    /// `null` for an object written while the bucket had no versioning.
    pub version_id: String,
    /// Its size, where the listing gives it.
    pub size: Option<u64>,
}

/// What a version listing found under a prefix.
#[derive(Debug, Default)]
pub(crate) struct VersionListing {
    /// In the bucket's order: by key, and each key's versions newest first.
    pub versions: Vec<ObjectVersion>,
    /// With a delimiter: the "directories" right under the prefix, relative
    /// to it, including those whose every key is hidden by a delete marker.
    pub children: Vec<String>,
}

/// Signs and sends version listings for one bucket.
pub(crate) struct VersionLister {
    s3: Arc<AmazonS3>,
    http: HttpClient,
    /// The bucket's URL, without a trailing slash.
    bucket_url: String,
    region: String,
    /// The store's key prefix (no slashes around it), or "".
    prefix: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    #[serde(default, rename = "Version")]
    versions: Vec<VersionEntry>,
    #[serde(default)]
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionEntry {
    key: String,
    version_id: String,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommonPrefix {
    prefix: String,
}

/// Listings stop after this many pages: an object has a handful of versions,
/// and a prefix of snapshots a few thousand names.
const MAX_PAGES: usize = 10_000;

/// The bucket's URL as the `object_store` client addresses it: an endpoint
/// given is the bucket's own with virtual-hosted requests, else the server's;
/// AWS by region otherwise.
pub(crate) fn bucket_url(endpoint: Option<&str>, virtual_hosted: bool, bucket: &str, region: &str) -> String {
    match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_string(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

/// Attempts of one listing request when the server answers 5xx or not at all.
const ATTEMPTS: u32 = 4;

/// The HTTP settings of the store's client that a version listing needs
/// too: a proxy (and its CA and exclusions), certificate checking, plain
/// HTTP, timeouts. `value` reads one from the store's configuration (its
/// options and `AWS_*` environment variables alike).
pub(crate) fn client_options(value: impl Fn(ClientConfigKey) -> Option<String>) -> ClientOptions {
    const SHARED: [ClientConfigKey; 16] = [
        ClientConfigKey::AllowHttp,
        ClientConfigKey::AllowInvalidCertificates,
        ClientConfigKey::ConnectTimeout,
        ClientConfigKey::Http1Only,
        ClientConfigKey::Http2KeepAliveInterval,
        ClientConfigKey::Http2KeepAliveTimeout,
        ClientConfigKey::Http2KeepAliveWhileIdle,
        ClientConfigKey::Http2MaxFrameSize,
        ClientConfigKey::Http2Only,
        ClientConfigKey::PoolIdleTimeout,
        ClientConfigKey::PoolMaxIdlePerHost,
        ClientConfigKey::ProxyUrl,
        ClientConfigKey::ProxyCaCertificate,
        ClientConfigKey::ProxyExcludes,
        ClientConfigKey::Timeout,
        ClientConfigKey::UserAgent,
    ];
    SHARED.into_iter().fold(ClientOptions::new(), |options, key| match value(key) {
        Some(setting) => options.with_config(key, setting),
        None => options,
    })
}

impl VersionLister {
    pub(crate) fn new(
        s3: Arc<AmazonS3>,
        bucket_url: String,
        options: ClientOptions,
        region: &str,
        prefix: &str,
    ) -> Result<VersionLister> {
        // As the store's client: an endpoint given as http:// is allowed plain HTTP.
        let options = match bucket_url.starts_with("http://") {
            true => options.with_allow_http(true),
            false => options,
        };
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|error| StorageError::ObjectSetup(format!("{bucket_url}: cannot start its client: {error}")))?;
        Ok(VersionLister { s3, http, bucket_url, region: region.to_string(), prefix: prefix.to_string() })
    }

    fn full_key(&self, rel: &str) -> String {
        match self.prefix.is_empty() {
            true => rel.to_string(),
            false => format!("{}/{rel}", self.prefix),
        }
    }

    fn rel_key(&self, full: &str) -> String {
        match self.prefix.is_empty() {
            true => full.to_string(),
            false => full.strip_prefix(&self.prefix).unwrap_or(full).trim_start_matches('/').to_string(),
        }
    }

    /// Every version under `rel_prefix`, and with `delimiter` the names of
    /// the "directories" right under it.
    pub(crate) async fn list(&self, rel_prefix: &str, delimiter: Option<char>) -> Result<VersionListing> {
        let failed = |status: Option<u16>, detail: String| StorageError::Versions {
            what: format!("{}/{}", self.bucket_url, self.full_key(rel_prefix)),
            status,
            detail,
        };
        let full_prefix = self.full_key(rel_prefix);
        let mut listing = VersionListing::default();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("prefix", full_prefix.clone()), ("versions", String::new())];
            if let Some(delimiter) = delimiter {
                query.push(("delimiter", delimiter.to_string()));
            }
            if let Some((key_marker, version_marker)) = &markers {
                query.push(("key-marker", key_marker.clone()));
                // Absent after a page that ended on a common prefix; some servers refuse it empty.
                if !version_marker.is_empty() {
                    query.push(("version-id-marker", version_marker.clone()));
                }
            }
            let page = self.page_with_retries(&query).await.map_err(|(status, detail)| failed(status, detail))?;
            listing.versions.extend(page.versions.into_iter().map(|entry| ObjectVersion {
                key: self.rel_key(&entry.key),
                version_id: entry.version_id,
                size: entry.size,
            }));
            listing.children.extend(page.common_prefixes.into_iter().filter_map(|common| {
                let name = common.prefix.strip_prefix(&full_prefix)?.trim_end_matches(delimiter.unwrap_or('/'));
                (!name.is_empty()).then(|| name.to_string())
            }));
            if !page.is_truncated {
                listing.children.sort();
                listing.children.dedup();
                return Ok(listing);
            }
            markers = match (page.next_key_marker, page.next_version_id_marker) {
                (Some(key), version) => Some((key, version.unwrap_or_default())),
                (None, _) => return Err(failed(None, "a truncated listing without a next marker".into())),
            };
        }
        Err(failed(None, format!("more than {MAX_PAGES} pages")))
    }

    /// [`VersionLister::page`], again after a pause when the server failed
    /// (5xx) or did not answer, as the `object_store` client does.
    async fn page_with_retries(
        &self,
        query: &[(&str, String)],
    ) -> std::result::Result<ListVersionsResult, (Option<u16>, String)> {
        let mut pause = std::time::Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.page(query).await {
                // 501: the server does not list versions; asking again will not help.
                Err((status, detail))
                    if attempt < ATTEMPTS && status.is_none_or(|status| status >= 500 && status != 501) =>
                {
                    tracing::debug!(?status, %detail, attempt, "version listing failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One signed `GET /?versions` request.
    async fn page(&self, query: &[(&str, String)]) -> std::result::Result<ListVersionsResult, (Option<u16>, String)> {
        let credential = self.s3.credentials().get_credential().await.map_err(|error| (None, error.to_string()))?;
        let encoded: Vec<String> =
            query.iter().map(|(name, value)| format!("{name}={}", encode_query_value(value))).collect();
        let url = format!("{}/?{}", self.bucket_url, encoded.join("&"));
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(&url)
            .body(HttpRequestBody::empty())
            .map_err(|error| (None, format!("bad request {url}: {error}")))?;
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
        let response = self.http.execute(request).await.map_err(|error| (None, error.to_string()))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|error| (Some(status.as_u16()), error.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err((Some(status.as_u16()), text));
        }
        quick_xml::de::from_reader(body.as_ref())
            .map_err(|error| (Some(status.as_u16()), format!("unexpected listing: {error}")))
    }
}

/// Percent-encode a query value as SigV4 expects: everything but the
/// unreserved characters.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_use_the_proxy_and_certificate_settings_of_the_store_client() {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let builder = AmazonS3Builder::new()
            .with_proxy_url("http://proxy.hospital.example:3128")
            .with_proxy_excludes("10.0.0.0/8")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::AllowInvalidCertificates), "true")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "90s");
        let options = client_options(|key| builder.get_config_value(&AmazonS3ConfigKey::Client(key)));
        let setting = |key| options.get_config_value(&key);
        assert_eq!(setting(ClientConfigKey::ProxyUrl).as_deref(), Some("http://proxy.hospital.example:3128"));
        assert_eq!(setting(ClientConfigKey::ProxyExcludes).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(setting(ClientConfigKey::AllowInvalidCertificates).as_deref(), Some("true"));
        assert_eq!(setting(ClientConfigKey::Timeout).as_deref(), Some("90s"));
        assert_eq!(setting(ClientConfigKey::AllowHttp).as_deref(), Some("false"));
    }

    #[test]
    fn a_listing_keeps_versions_in_order_and_skips_delete_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>backup</Name><Prefix>site1/objects/ab/</Prefix><IsTruncated>true</IsTruncated>
  <NextKeyMarker>site1/objects/ab/abd</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
  <Version><Key>site1/objects/ab/abc</Key><VersionId>v4</VersionId><IsLatest>true</IsLatest><Size>6</Size></Version>
  <DeleteMarker><Key>site1/objects/ab/abc</Key><VersionId>v3</VersionId><IsLatest>false</IsLatest></DeleteMarker>
  <Version><Key>site1/objects/ab/abc</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><Size>11</Size></Version>
  <Version><Key>site1/objects/ab/abc</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><Size>5</Size></Version>
  <CommonPrefixes><Prefix>site1/objects/ab/x/</Prefix></CommonPrefixes>
</ListVersionsResult>"#;
        let page: ListVersionsResult = quick_xml::de::from_str(xml).expect("a listing");
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("site1/objects/ab/abd"));
        let versions: Vec<(&str, Option<u64>)> =
            page.versions.iter().map(|entry| (entry.version_id.as_str(), entry.size)).collect();
        assert_eq!(versions, [("v4", Some(6)), ("v2", Some(11)), ("v1", Some(5))]);
        assert_eq!(page.common_prefixes[0].prefix, "site1/objects/ab/x/");
    }

    #[test]
    fn the_bucket_is_addressed_as_the_client_addresses_it() {
        assert_eq!(bucket_url(Some("http://127.0.0.1:7433/"), false, "b", "r"), "http://127.0.0.1:7433/b");
        assert_eq!(bucket_url(Some("https://b.s3.example.org"), true, "b", "r"), "https://b.s3.example.org");
        assert_eq!(bucket_url(None, false, "my.bucket", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/my.bucket");
        assert_eq!(bucket_url(None, true, "b", "eu-west-1"), "https://b.s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn query_values_are_encoded_for_signing() {
        assert_eq!(encode_query_value("site 1/objects~ab_c.d"), "site%201%2Fobjects~ab_c.d");
        assert_eq!(encode_query_value("한"), "%ED%95%9C");
    }
}
