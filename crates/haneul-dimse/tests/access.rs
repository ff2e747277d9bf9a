//! Roles and association limits on the DIMSE server, in process: Haneul's
//! own service user against a `DicomServer` on loopback.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haneul_core::audit::{Action, Filter, Outcome};
use haneul_core::{Archive, ArchiveConfig, Role};
use haneul_dicom::levels::InformationModel;
use haneul_dicom::{tags, Dataset, Element, VR};
use haneul_dimse::command::{status, tag};
use haneul_dimse::scu::StoreData;
use haneul_dimse::{sop, Client, DicomServer, KnownAe, ProposedContext, RequestParams, ScuError, ServerSettings};

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

struct Running {
    archive: Arc<Archive>,
    address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(settings: ServerSettings) -> Running {
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = Archive::open(ArchiveConfig::new(dir.path().join("data"))).expect("opening the archive");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let address = listener.local_addr().expect("address").to_string();
    let server = DicomServer::new(Arc::clone(&archive), settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Running { archive, address, stop: Some(stop), _dir: dir }
}

fn known(title: &str, role: Role) -> KnownAe {
    KnownAe { title: title.into(), host: "127.0.0.1".into(), port: 104, role, site: String::new() }
}

async fn connect(address: &str, calling_ae: &str) -> Result<Client, ScuError> {
    let params = RequestParams {
        calling_ae: calling_ae.into(),
        called_ae: "HANEUL".into(),
        max_pdu_length: 65_536,
        timeout: Duration::from_secs(10),
        tls: None,
    };
    let mut proposed: Vec<ProposedContext> = [sop::VERIFICATION, sop::STUDY_ROOT_FIND, sop::STUDY_ROOT_MOVE]
        .iter()
        .map(|class| ProposedContext::new(class, &[EXPLICIT_LE]))
        .collect();
    proposed.push(ProposedContext::new(CT_IMAGE_STORAGE, &[EXPLICIT_LE]));
    Client::connect(address, &params, &proposed).await
}

fn study_query() -> Dataset {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
    identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, ""));
    identifier
}

/// Poll `attempt` until it gives `Some`, for at most ten seconds.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut attempt: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_which_services_an_association_may_use() {
    let settings = ServerSettings {
        known_aes: haneul_dimse::AeDirectory::new(vec![
            known("VIEWER", Role::Clinician),
            known("RESEARCH", Role::Researcher),
        ]),
        ..ServerSettings::default()
    };
    let server = start(settings).await;

    let mut viewer = connect(&server.address, "VIEWER").await.expect("VIEWER associates");
    assert_eq!(viewer.echo().await.expect("C-ECHO"), status::SUCCESS, "C-ECHO needs no permission");
    assert_eq!(
        viewer.find(InformationModel::StudyRoot, &study_query(), |_| {}).await.expect("C-FIND"),
        status::SUCCESS
    );
    // A clinician reads but does not store: the data set is read past and refused.
    let context = viewer.info().find_context(CT_IMAGE_STORAGE, None).expect("storage context").id;
    let data = vec![0u8; 300_000];
    let response = viewer
        .store(context, CT_IMAGE_STORAGE, "1.2.3.4.5", StoreData::Bytes(&data), None)
        .await
        .expect("a C-STORE response");
    assert_eq!(response.status(), Some(status::NOT_AUTHORIZED));
    assert_eq!(response.text(tag::AFFECTED_SOP_INSTANCE_UID), Some("1.2.3.4.5"));
    assert!(response.text(tag::ERROR_COMMENT).is_some_and(|c| c.contains("clinician")), "{response:?}");
    // The association goes on.
    assert_eq!(viewer.echo().await.expect("C-ECHO after a refusal"), status::SUCCESS);
    viewer.release().await.expect("release");

    // A researcher reaches only de-identified exports: no C-FIND, no C-MOVE.
    let mut research = connect(&server.address, "RESEARCH").await.expect("RESEARCH associates");
    let code = research.find(InformationModel::StudyRoot, &study_query(), |_| panic!("no match expected")).await;
    assert_eq!(code.expect("a C-FIND response"), status::NOT_AUTHORIZED);
    let summary = research.retrieve_move(InformationModel::StudyRoot, "VIEWER", &study_query()).await;
    assert_eq!(summary.expect("a C-MOVE response").status, status::NOT_AUTHORIZED);
    research.release().await.expect("release");

    // Any other title from loopback is a service account: it may store (this
    // data set is not DICOM, so storing fails, but not for lack of permission).
    let mut other = connect(&server.address, "ANYONE").await.expect("loopback associates");
    let context = other.info().find_context(CT_IMAGE_STORAGE, None).expect("storage context").id;
    let response = other.store(context, CT_IMAGE_STORAGE, "1.2.3.4.6", StoreData::Bytes(&data), None).await;
    let code = response.expect("a C-STORE response").status();
    assert!(code.is_some_and(|code| code != status::NOT_AUTHORIZED && code != status::SUCCESS), "{code:?}");
    other.release().await.expect("release");

    assert_eq!(server.archive.metrics().permission_denied.get(), 3);
    let archive = Arc::clone(&server.archive);
    let records = tokio::task::spawn_blocking(move || {
        archive.auditor().flush();
        let dir = archive.auditor().dir().expect("the audit trail is on").to_path_buf();
        let filter = Filter { action: Some(Action::PermissionDenied), ..Filter::default() };
        haneul_core::audit::search(&dir, &filter, 100).expect("searching the trail")
    })
    .await
    .expect("search task");
    let mut seen: Vec<(String, String)> = records
        .iter()
        .map(|record| {
            assert_eq!(record.outcome, Outcome::Failure);
            assert_eq!(record.source, "127.0.0.1");
            (record.actor.clone(), record.detail["service"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    seen.sort();
    let expected = [("RESEARCH", "C-FIND"), ("RESEARCH", "C-MOVE"), ("VIEWER", "C-STORE")];
    assert_eq!(seen, expected.map(|(actor, service)| (actor.to_string(), service.to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_per_calling_ae_and_per_address_are_limited() {
    let settings =
        ServerSettings { max_associations_per_ae: 2, max_associations_per_ip: 3, ..ServerSettings::default() };
    let server = start(settings).await;

    let first = connect(&server.address, "CT1").await.expect("first CT1 association");
    let second = connect(&server.address, "CT1").await.expect("second CT1 association");
    let error = connect(&server.address, "CT1").await.err().expect("a third CT1 association is rejected");
    assert!(error.to_string().contains("local limit exceeded"), "{error}");

    // Another AE from the same address has room until the address is full.
    let mr = connect(&server.address, "MR1").await.expect("MR1 association");
    let error = connect(&server.address, "US1").await.err().expect("the address is full");
    assert!(error.to_string().contains("local limit exceeded"), "{error}");
    assert_eq!(server.archive.metrics().associations_rejected.get(), 2);

    // A released association gives its place back (once the server has
    // finished with it, hence the polling).
    first.release().await.expect("release");
    let mut third =
        eventually("a CT1 place to come free", || async { connect(&server.address, "CT1").await.ok() }).await;
    assert_eq!(third.echo().await.expect("C-ECHO"), status::SUCCESS);
    for client in [second, mr, third] {
        client.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_that_go_idle_are_dropped_and_counted() {
    let settings = ServerSettings { idle_timeout: Duration::from_secs(1), ..ServerSettings::default() };
    let server = start(settings).await;
    let mut client = connect(&server.address, "QUIET").await.expect("association");
    assert_eq!(client.echo().await.expect("C-ECHO"), status::SUCCESS);
    assert_eq!(server.archive.metrics().associations_timed_out.get(), 0);
    // Nothing more from the client: the server drops it after a second, and counts it.
    eventually("the idle association to be counted", || async {
        (server.archive.metrics().associations_timed_out.get() == 1).then_some(())
    })
    .await;
    assert!(client.echo().await.is_err(), "the dropped association still answers");
    assert_eq!(server.archive.metrics().active_associations.get(), 0);
}
