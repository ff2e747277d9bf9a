//! Commands that ask the running server (over its REST API) rather than
//! opening the archive beside it: where the server is and the credentials.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use haneul_replication::http::{HttpClient, Method};

/// The environment variable with an API token of the server (`hnl_…`).
pub const TOKEN_ENV: &str = "HANEUL_TOKEN";

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The server's configuration file (its http.listen and [http.tls] give the server's URL).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The server's URL (instead of the one from --config), e.g. https://pacs.example.org:8443.
    #[arg(long)]
    pub server: Option<String>,
    /// A file with an API token of the server (default: the HANEUL_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM authorities for an https server (default: the system's).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<HttpClient> {
        let server = self.server_url()?;
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => std::env::var(TOKEN_ENV).map_err(|_| {
                anyhow::anyhow!("no credentials: set {TOKEN_ENV} to an API token of the server, or give --token-file")
            })?,
        };
        if !token.trim().starts_with("hnl_") {
            bail!("the token is not a Haneul API token (hnl_…)");
        }
        HttpClient::new(&server, &token, self.ca_file.as_deref(), None).map_err(|error| anyhow::anyhow!(error))
    }

    /// The server's URL: --server, or from the configuration's HTTP listener.
    fn server_url(&self) -> anyhow::Result<String> {
        if let Some(server) = &self.server {
            return Ok(server.clone());
        }
        let config = match &self.config {
            Some(path) => crate::config::Config::load(path)?,
            None => crate::config::Config::default(),
        };
        if config.http.listen.is_empty() {
            bail!("http.listen is empty in the configuration: give the server's URL with --server");
        }
        let mut address: std::net::SocketAddr =
            config.http.listen.parse().with_context(|| format!("http.listen: {:?}", config.http.listen))?;
        // A wildcard listener is reached on loopback.
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if config.http.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{address}"))
    }
}

/// Call the server and read a JSON answer; a failure names the URL and the server's message.
pub async fn call_json<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    method: Method,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let (status, body) = client.call(method, path, timeout).await.map_err(|error| anyhow::anyhow!(error))?;
    if !status.is_success() {
        bail!("{}", haneul_replication::http::failure(&client.base_url(), path, status, &body));
    }
    serde_json::from_slice(&body).with_context(|| format!("the server's answer to {path} is not what was expected"))
}
