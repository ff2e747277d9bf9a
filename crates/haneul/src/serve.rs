//! `haneul serve`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use haneul_core::{Archive, ArchiveConfig};
use haneul_dimse::DicomServer;
use tracing::{info, warn};

use crate::{logging, ArchiveOptions};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// DICOM port (overrides the port of dicom.listen).
    #[arg(long)]
    dicom_port: Option<u16>,
    /// AE title (overrides dicom.ae_title).
    #[arg(long)]
    ae_title: Option<String>,
    /// HTTP address (overrides http.listen; "" disables HTTP).
    #[arg(long)]
    http: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.archive.load()?;
    if let Some(port) = args.dicom_port {
        let mut address = config.dicom_listen()?;
        address.set_port(port);
        config.dicom.listen = address.to_string();
    }
    if let Some(title) = args.ae_title {
        config.dicom.ae_title = title;
    }
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    config.validate()?;
    let config_file = match &args.archive.config {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some((path.display().to_string(), blake3::hash(&bytes).to_hex().to_string()))
        }
        None => None,
    };
    logging::init(&config.log);
    #[cfg(unix)]
    raise_open_files_limit();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(config, config_file))?;
    Ok(ExitCode::SUCCESS)
}

/// Raise the soft limit on open files to the hard one. Every association,
/// HTTP connection, blob being written and catalog file takes a descriptor;
/// the soft limit a service manager gives (often 1,024) is reached by a
/// busy archive long before the hard one (often 524,288).
#[cfg(unix)]
fn raise_open_files_limit() {
    // Where the hard limit is "unlimited" (macOS), setrlimit refuses it.
    const ENOUGH: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read the open files limit");
        return;
    }
    let target = limit.rlim_max.min(ENOUGH);
    if limit.rlim_cur >= target {
        return;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = target;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), soft, "cannot raise the open files limit");
        return;
    }
    tracing::info!(from = soft, to = target, "open files limit raised");
}

/// `config_file`: the configuration file and its BLAKE3 digest, if one was given.
async fn serve(config: crate::config::Config, config_file: Option<(String, String)>) -> anyhow::Result<()> {
    // Taken before any listener is bound: a SIGTERM that arrives as soon as
    // the ports answer must still stop the archive cleanly, not kill it.
    let shutdown_signal = ShutdownSignal::install();
    let data_dir = config.storage.data_dir.clone();
    let archive_config = ArchiveConfig {
        duplicate_policy: config.storage.duplicate_policy,
        audit: config.audit.enabled,
        default_site: config.storage.site.clone(),
        ae_title: config.dicom.ae_title.clone(),
        replication_peers: config.peers.iter().map(|peer| peer.ae_title.clone()).collect(),
        coercions: config.migration.coercions(&config.dicom.ae_title),
        catalog: config.catalog.location()?,
        blobs: config.blob_config()?,
        write_ahead_max_bytes: config.storage.write_ahead_max_bytes,
        ..ArchiveConfig::new(&data_dir)
    };
    if config.catalog.unencrypted_over_network() {
        warn!("the catalog is reached over the network without TLS: set catalog.ca_file to encrypt it (patient names and IDs cross the network in clear)");
    }
    if !config.audit.enabled {
        warn!("the audit trail is off ([audit] enabled = false): accesses to patient data are not recorded");
    }
    let archive = tokio::task::spawn_blocking(move || Archive::open(archive_config))
        .await
        .context("opening the archive")?
        .with_context(|| format!("cannot open the archive in {}", data_dir.display()))?;
    if let Some(target) = config.audit.syslog.target()? {
        let settings = haneul_core::audit::syslog::SyslogSettings {
            target: target.clone(),
            ca_file: config.audit.syslog.ca_file.clone(),
            identity: haneul_core::audit::syslog::Identity::new(&config.dicom.ae_title),
        };
        archive.auditor().forward_to_syslog(settings).map_err(|error| anyhow::anyhow!("audit.syslog: {error}"))?;
        info!(%target, "forwarding audit records to syslog");
    }
    let recovery = archive.recovery_report();
    info!(
        data_dir = %config.storage.data_dir.display(),
        removed_unreferenced = recovery.unreferenced_removed.len(),
        "archive open"
    );
    create_initial_admin(&archive).await?;
    // Each start is a configuration change in the trail: which file, with
    // which content (its digest), so a changed setting shows between starts.
    let (file, digest) = config_file.unwrap_or_else(|| ("built-in defaults".into(), String::new()));
    let start =
        haneul_core::audit::Entry::new(haneul_core::audit::Action::ConfigChange, "haneul", "localhost", "start")
            .detail("change", "server start")
            .detail("config", file)
            .detail("config_blake3", digest)
            .detail("version", env!("CARGO_PKG_VERSION"));
    archive.audit(start);
    let replication_peers = config.replication_peers();
    // A peer's TLS files are read now, so that a bad one stops the start
    // (and are kept: clones share what was read).
    for (peer, _) in &replication_peers {
        if let Some(tls) = &peer.tls {
            tls.client_tls().map_err(|error| anyhow::anyhow!(error))?;
        }
    }
    // Synchronous replicas are in place before the first store can arrive.
    let peers: Vec<_> = replication_peers
        .into_iter()
        .map(|(peer, sync)| {
            info!(peer = %peer.name, ae_title = %peer.ae_title, host = %peer.host, port = peer.port, synchronous = sync.is_some(), tls = peer.tls.is_some(), "replicating to peer");
            let confirmed = sync.map(|on_failure| {
                let replica = Arc::new(haneul_replication::SyncPeer::new(peer.clone(), on_failure));
                let confirmed = replica.confirmed();
                archive.add_sync_replica(replica);
                confirmed
            });
            (peer, confirmed)
        })
        .collect();

    // Anti-entropy: the verifier is in place before the HTTP edge can ask for it.
    let verifier = match config.peers.is_empty() {
        true => None,
        false => {
            let verifier = haneul_replication::Verifier::new(Arc::clone(&archive), config.verify_peers());
            verifier.restore_reports().await;
            archive
                .replication()
                .set_verifier(Arc::clone(&verifier) as Arc<dyn haneul_core::replication::PeerVerifier>);
            Some(verifier)
        }
    };

    // Migrations: in place before the HTTP edge can start one; resumed once
    // the DICOM port takes the C-MOVEs they ask for.
    let migrations = haneul_migrate::Migrations::new(
        Arc::clone(&archive),
        config.migration.sources(&config.dicom.ae_title, config.dicom.max_pdu_length),
    );
    archive.set_migrations(Arc::clone(&migrations) as Arc<dyn haneul_core::migration::MigrationControl>);

    let dicom_address = config.dicom_listen()?;
    let listener = tokio::net::TcpListener::bind(dicom_address)
        .await
        .with_context(|| format!("cannot listen for DICOM on {dicom_address} (dicom.listen)"))?;
    info!(address = %listener.local_addr()?, ae_title = %config.dicom.ae_title, "DICOM listening");
    if !dicom_address.ip().is_loopback() {
        // `validate` let this through only with dicom.insecure = true.
        warn!(
            address = %dicom_address,
            "plain DICOM listens on a non-loopback address (dicom.insecure = true): associations there are not encrypted"
        );
    }
    let tls_listener = match config.dicom_tls()? {
        Some((address, tls)) => {
            let tls_listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for DICOM TLS on {address} (dicom.tls.listen)"))?;
            info!(address = %tls_listener.local_addr()?, ae_title = %config.dicom.ae_title, "DICOM TLS listening");
            Some((tls_listener, tls))
        }
        None => None,
    };
    // The AEs of the configuration file, and those shared through the
    // catalog (read now, so the first association already sees them).
    let known_aes = config.ae_directory();
    refresh_shared_aes(&archive, &known_aes).await.context("reading the shared AEs from the catalog")?;
    let dicom = DicomServer::new(Arc::clone(&archive), config.server_settings(&known_aes));

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let http_task = if config.http.listen.is_empty() {
        None
    } else {
        let tls = config.http_tls()?;
        let http_listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {} (http.listen)", config.http.listen))?;
        info!(address = %http_listener.local_addr()?, tls = tls.is_some(), "HTTP listening");
        if config.http_insecure_exposure() {
            warn!(
                address = %config.http.listen,
                "HTTP is reachable from the network without TLS (http.insecure = true): passwords, tokens and images cross the network in clear unless a TLS proxy is in front"
            );
        }
        let mut stop = stop.clone();
        let state = haneul_dicomweb::WebState::new(Arc::clone(&archive), config.web_config(&known_aes)?);
        let viewer = haneul_viewer::router_with_base(&config.http.base_path);
        Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            match tls {
                Some(tls) => haneul_dicomweb::tls::serve_tls(http_listener, tls, state, viewer, shutdown).await,
                None => haneul_dicomweb::serve_with(http_listener, state, viewer, shutdown).await,
            }
        }))
    };

    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let dicom_tls_task = tls_listener.map(|(tls_listener, tls)| {
        tokio::spawn(Arc::clone(&dicom).serve_tls(tls_listener, tls, stopped(stop.clone())))
    });
    let dicom_task = tokio::spawn(dicom.serve(listener, stopped(stop.clone())));
    migrations.resume().await;
    let ae_refresher = tokio::spawn(refresh_shared_aes_forever(Arc::clone(&archive), known_aes, stop.clone()));

    let lease_term = config.replication_lease();
    // Nodes sharing a bucket show they are alive with a lease, and judge
    // what the ones that died left unsettled.
    let adopter = archive.is_in_shared_bucket().then(|| {
        let _alive = haneul_core::lease::keep(
            Arc::clone(&archive),
            haneul_core::lease::node_lease_name(archive.node_name()),
            lease_term,
            stop.clone(),
        );
        tokio::spawn(adopt_dead_nodes_forever(Arc::clone(&archive), lease_term, stop.clone()))
    });
    // Shipping to a peer, and verifying it, run on the one node of a shared
    // catalog that holds the peer's lease (always this one when alone).
    let leases: std::collections::HashMap<String, _> = peers
        .iter()
        .map(|(peer, _)| {
            let lease = haneul_core::lease::keep(
                Arc::clone(&archive),
                haneul_replication::lease_name(&peer.name),
                lease_term,
                stop.clone(),
            );
            (peer.name.clone(), lease)
        })
        .collect();
    let replicators: Vec<_> = peers
        .into_iter()
        .zip(config.verify_peers())
        .map(|((peer, confirmed), api)| {
            // Removals go through the peer's REST API, when one is configured.
            let api = (api.url.is_some() && api.token_file.is_some()).then_some(api);
            if api.is_none() {
                warn!(peer = %peer.name, "removals are not passed on to this peer: set its url and token_file");
            }
            let lease = leases[&peer.name].clone();
            tokio::spawn(haneul_replication::run(Arc::clone(&archive), peer, confirmed, api, lease, stop.clone()))
        })
        .collect();
    let verifiers = match (&verifier, config.verify_interval()) {
        (Some(verifier), Some(interval)) => config
            .verify_peers()
            .into_iter()
            .filter(|peer| peer.url.is_some() && peer.token_file.is_some())
            .map(|peer| {
                info!(peer = %peer.peer.name, interval_minutes = interval.as_secs() / 60, "verifying the peer periodically");
                let lease = leases[&peer.peer.name].clone();
                tokio::spawn(haneul_replication::verify_periodically(
                    Arc::clone(verifier),
                    peer.peer.name,
                    interval,
                    lease,
                    stop.clone(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };

    shutdown_signal.wait().await;
    info!("shutting down");
    let _ = stop_sender.send(true);
    let _ = dicom_task.await;
    for replicator in replicators {
        let _ = replicator.await;
    }
    let _ = ae_refresher.await;
    if let Some(adopter) = adopter {
        let _ = adopter.await;
    }
    // A verify under way is cut short: what it repaired so far is durable,
    // the rest is found again by the next one.
    for task in verifiers {
        task.abort();
    }
    if let Some(task) = dicom_tls_task {
        let _ = task.await;
    }
    if let Some(mut task) = http_task {
        // Open requests may finish, not hold the stop for ever (a peer's
        // replication verify runs for hours inside its request).
        if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut task).await.is_err() {
            warn!(grace_seconds = HTTP_SHUTDOWN_GRACE.as_secs(), "HTTP requests still running at shutdown: cut");
            task.abort();
        }
    }
    archive.shutdown().await;
    info!("stopped");
    Ok(())
}

/// How long open HTTP requests may run on once the server is told to stop.
const HTTP_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a node reads the shared AEs again (`haneul ae add` on
/// another node, or the REST API, changed them).
const SHARED_AE_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Read the shared AEs from the catalog into the directory both edges use.
async fn refresh_shared_aes(archive: &Arc<Archive>, directory: &haneul_core::aes::AeDirectory) -> anyhow::Result<()> {
    let (shared, directory) = (archive.shared_aes(), directory.clone());
    let before = directory.entries();
    let refreshed =
        tokio::task::spawn_blocking(move || directory.refresh(&shared).map(|shadowed| (shadowed, directory)))
            .await
            .context("refreshing the shared AEs")??;
    let (shadowed, directory) = refreshed;
    let after = directory.entries();
    if before != after {
        let shared = after.iter().filter(|entry| entry.source == haneul_core::aes::AeSource::Shared).count();
        info!(known = after.len(), shared, "known AEs updated from the catalog");
        for title in shadowed {
            warn!(ae_title = %title, "a shared AE has the title of one in this node's configuration, which wins here");
        }
    }
    Ok(())
}

/// Run `round` every `period` until `stop` turns true.
async fn every<F: std::future::Future<Output = ()>>(
    period: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: impl FnMut() -> F,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        round().await;
    }
}

async fn refresh_shared_aes_forever(
    archive: Arc<Archive>,
    directory: haneul_core::aes::AeDirectory,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    every(SHARED_AE_REFRESH, stop, || async {
        if let Err(error) = refresh_shared_aes(&archive, &directory).await {
            warn!(error = format!("{error:#}"), "cannot refresh the shared AEs; the last list stays in use");
        }
    })
    .await;
}

/// Every lease term, judge what nodes that died left unsettled in the shared
/// bucket (see [`Archive::adopt_dead_nodes`]).
async fn adopt_dead_nodes_forever(
    archive: Arc<Archive>,
    term: std::time::Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    every(term, stop, || async {
        if let Err(error) = archive.adopt_dead_nodes(term).await {
            warn!(%error, "cannot judge the unsettled instances of dead nodes; will try again");
        }
    })
    .await;
}

/// On first start (no account at all), create the `admin` account with the
/// password from `HANEUL_ADMIN_PASSWORD`, or a random one shown once here.
async fn create_initial_admin(archive: &haneul_core::Archive) -> anyhow::Result<()> {
    use haneul_core::users::{ADMIN_PASSWORD_ENV, INITIAL_ADMIN};
    let password = std::env::var(ADMIN_PASSWORD_ENV).ok().filter(|password| !password.is_empty());
    let users = archive.users();
    let created = tokio::task::spawn_blocking(move || users.ensure_initial_admin(password))
        .await
        .context("creating the first user")?
        .with_context(|| format!("cannot create the first user {INITIAL_ADMIN:?} ({ADMIN_PASSWORD_ENV})"))?;
    let Some(admin) = created else {
        return Ok(());
    };
    info!(user = %admin.user.name, from_environment = admin.generated_password.is_none(), "created the first administrator");
    if let Some(password) = admin.generated_password {
        let rule = "=".repeat(72);
        eprintln!(
            "\n{rule}\n  Haneul first start: created the administrator account.\n\n      user:     {}\n      password: {password}\n\n  This password is shown only once and must be changed at the first\n  sign-in (or now: haneul user passwd {} --password-stdin).\n  Set {ADMIN_PASSWORD_ENV} before the first start to choose it instead.\n{rule}\n",
            admin.user.name, admin.user.name
        );
    }
    Ok(())
}

/// SIGTERM or Ctrl-C, with the handlers registered when it is made.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let terminate = signal(SignalKind::terminate())
                .inspect_err(|error| warn!(%error, "cannot handle SIGTERM; stop with Ctrl-C"))
                .ok();
            let interrupt = signal(SignalKind::interrupt()).ok();
            ShutdownSignal { terminate, interrupt }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let ShutdownSignal { terminate, interrupt } = self;
            let next = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = next(terminate) => {}
                _ = next(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
