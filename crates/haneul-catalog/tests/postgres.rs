//! What only the PostgreSQL engine has: several processes on one catalog,
//! schema versions shared between node versions, snapshots into SQLite.

use std::collections::HashSet;

use haneul_catalog::testing::TestDatabase;
use haneul_catalog::*;
use postgres::NoTls;

fn planned(count: usize) -> Vec<PlannedStudy> {
    (0..count)
        .map(|n| PlannedStudy {
            study_uid: format!("1.2.{n}"),
            patient_id: format!("P{n}"),
            patient_name: "Kim^A".into(),
            study_date: format!("2024{:04}", 101 + n % 28),
            expected_instances: Some(1),
        })
        .collect()
}

/// Two nodes claiming work from one catalog at the same time never get the
/// same study, and between them get every one.
#[test]
fn nodes_sharing_a_catalog_claim_disjoint_studies() {
    let database = TestDatabase::create();
    let first = PostgresCatalog::connect(&database.options).expect("first node");
    let second = PostgresCatalog::connect(&database.options).expect("second node");
    assert_eq!(first.migration_plan("legacy", &planned(200)).expect("plan"), 200);
    let claim_all = |catalog: &PostgresCatalog| {
        let mut claimed = Vec::new();
        loop {
            let claimant = Claimant { node: "", now_ms: i64::MAX, abandoned_before_ms: 0 };
            let batch = catalog.migration_claim("legacy", 3, &claimant, 3).expect("claim");
            if batch.is_empty() {
                return claimed;
            }
            claimed.extend(batch.into_iter().map(|study| study.study_uid));
        }
    };
    let (by_first, by_second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| claim_all(&first));
        let b = scope.spawn(|| claim_all(&second));
        (a.join().expect("first"), b.join().expect("second"))
    });
    let first_set: HashSet<_> = by_first.iter().collect();
    let second_set: HashSet<_> = by_second.iter().collect();
    assert!(first_set.is_disjoint(&second_set), "a study was claimed twice");
    assert_eq!(first_set.len() + second_set.len(), 200);
    assert_eq!(by_first.len() + by_second.len(), 200);
}

fn set_setting(database: &TestDatabase, key: &str, value: &str) {
    let mut config: postgres::Config = database.options.url.parse().expect("test database URL");
    if let Some(password) = &database.options.password {
        config.password(password);
    }
    let (key, value) = (key.to_string(), value.to_string());
    std::thread::spawn(move || {
        let mut client = config.connect(NoTls).expect("connect");
        client.execute("UPDATE settings SET value = $2 WHERE key = $1", &[&key, &value]).expect("update setting");
    })
    .join()
    .expect("setting thread");
}

/// A node keeps working on a catalog a newer version upgraded, as long as
/// that version declared it compatible: nodes are upgraded one at a time.
#[test]
fn a_newer_compatible_schema_is_used_and_an_incompatible_one_refused() {
    let database = TestDatabase::create();
    drop(PostgresCatalog::connect(&database.options).expect("create the schema"));
    set_setting(&database, "schema_version", "99");
    let beside_newer = PostgresCatalog::connect(&database.options).expect("a compatible newer schema");
    assert_eq!(beside_newer.setting("schema_version").expect("setting").as_deref(), Some("99"), "left as it is");
    set_setting(&database, "schema_compatible_from", "98");
    match PostgresCatalog::connect(&database.options) {
        Err(CatalogError::SchemaTooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("an incompatible schema was opened"),
    }
}

/// A backup of a PostgreSQL catalog is a SQLite snapshot that backups and
/// restores read like any other.
#[test]
fn a_snapshot_of_a_postgres_catalog_is_a_sqlite_catalog() {
    let database = TestDatabase::create();
    let catalog = PostgresCatalog::connect(&database.options).expect("connect");
    catalog.migration_plan("legacy", &planned(3)).expect("plan");
    catalog.set_setting("greeting", "안녕하세요").expect("setting");
    let instance = NewInstance {
        patient: PatientFacts { patient_id: "P1".into(), name: "홍^길동".into(), ..PatientFacts::default() },
        study: StudyFacts { study_uid: "1.2.3".into(), ..StudyFacts::default() },
        series: SeriesFacts { series_uid: "1.2.3.4".into(), modality: "CT".into(), ..SeriesFacts::default() },
        instance: InstanceFacts {
            sop_uid: "1.2.3.4.5".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            instance_number: None,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            dataset_offset: 132,
            blob: BlobInfo { path: "2024/01/01/00/a.dcm".into(), size: 4096, digest: [7; 32] },
            content_digest: Some([8; 32]),
            received_ms: 1,
            attrs: Default::default(),
            blob_durable: true,
            write_ahead: None,
        },
        origin: Origin { actor: "CT1".into(), ..Origin::default() },
        duplicate_policy: None,
    };
    let batch = CommitBatch {
        instances: std::slice::from_ref(&instance),
        policy: DuplicatePolicy::KeepFirst,
        events: &[],
        settled: &[],
        scan_from: None,
    };
    assert_eq!(catalog.commit(&batch).expect("commit"), [CommitOutcome::Stored]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.sqlite");
    catalog.snapshot_into(&path).expect("snapshot");
    let copy = SqliteCatalog::open(&path).expect("the snapshot opens as a SQLite catalog");
    assert_eq!(copy.setting("greeting").expect("setting").as_deref(), Some("안녕하세요"));
    assert_eq!(copy.migration_counts("legacy").expect("counts").pending, 3);
    let copied = copy.instances_by_sop_uid(&["1.2.3.4.5".into()]).expect("instances");
    assert_eq!(copied.len(), 1);
    assert_eq!((copied[0].blob.path.as_str(), copied[0].blob.digest), ("2024/01/01/00/a.dcm", [7; 32]));
    let snapshot = CatalogSnapshot::open(&path).expect("snapshot reader");
    assert_eq!((snapshot.counts().expect("counts").instances, snapshot.counts().expect("counts").patients), (1, 1));
}

/// The last handle to a catalog often goes on an async thread (the end of
/// `haneul serve`, of a tool's async main); closing its connections there
/// must not panic, as the blocking client's own close would.
#[test]
fn a_catalog_dropped_on_an_async_thread_closes_cleanly() {
    let database = TestDatabase::create();
    let catalog = PostgresCatalog::connect(&database.options).expect("connect");
    catalog.set_setting("probe", "1").expect("a write opens the writer");
    assert_eq!(catalog.setting("probe").expect("a read opens a reader").as_deref(), Some("1"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move { drop(catalog) });
}

/// A backup taken by an older version restores into PostgreSQL: its
/// snapshot lacks the tables added since (here `corrections`, schema 9),
/// which are left empty.
#[test]
fn a_snapshot_of_an_older_schema_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.sqlite");
    drop(SqliteCatalog::open(&path).expect("create"));
    {
        let connection = rusqlite::Connection::open(&path).expect("open");
        connection.execute_batch("DROP TABLE corrections; PRAGMA user_version = 8;").expect("make it version 8");
    }
    let database = TestDatabase::create();
    let catalog = PostgresCatalog::connect(&database.options).expect("connect");
    catalog.load_snapshot(&path).expect("an older snapshot loads");
    assert_eq!(catalog.latest_correction_clock().expect("reads"), 0);
}
