//! The versions anti-entropy compares: current instances and kept conflicts,
//! in study and SOP Instance UID order, with the content digests of versions
//! stored before schema version 4 filled in from their files.

use haneul_catalog::*;
use haneul_dicom::{tags, Dataset, Element, VR};

#[macro_use]
mod engines;

fn ds(elements: &[(haneul_dicom::Tag, VR, &str)]) -> Dataset {
    elements.iter().map(|(tag, vr, value)| Element::text(*tag, *vr, *value)).collect()
}

fn instance(study: &str, sop: &str, digest_byte: u8) -> NewInstance {
    let series = format!("{study}.9");
    NewInstance {
        patient: PatientFacts {
            patient_id: "P1".into(),
            attrs: ds(&[(tags::PATIENT_ID, VR::LO, "P1")]),
            ..PatientFacts::default()
        },
        study: StudyFacts {
            study_uid: study.into(),
            attrs: ds(&[(tags::STUDY_INSTANCE_UID, VR::UI, study)]),
            ..StudyFacts::default()
        },
        series: SeriesFacts {
            series_uid: series.clone(),
            modality: "CT".into(),
            attrs: ds(&[(tags::SERIES_INSTANCE_UID, VR::UI, &series)]),
            ..SeriesFacts::default()
        },
        instance: InstanceFacts {
            sop_uid: sop.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.7".into(),
            instance_number: Some(1),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            dataset_offset: 200,
            blob: BlobInfo { path: format!("2024/01/01/00/{sop}.dcm"), size: 1000, digest: [digest_byte; 32] },
            // Stored before content digests existed, except for 1.3.1.
            content_digest: (sop == "1.3.1").then_some([digest_byte ^ 0xff; 32]),
            received_ms: 0,
            attrs: ds(&[(tags::SOP_INSTANCE_UID, VR::UI, sop)]),
            blob_durable: true,
            write_ahead: None,
        },
        origin: Origin { actor: "TEST".into(), address: "local".into(), session: "t".into(), ..Origin::default() },
        duplicate_policy: None,
    }
}

fn versions(catalog: &dyn Catalog, scope: VersionScope<'_>) -> Vec<HeldVersion> {
    let mut found = Vec::new();
    catalog
        .held_versions(scope, &mut |version| {
            found.push(version);
            true
        })
        .expect("held versions");
    found
}

on_every_engine! {
    fn held_versions_include_conflicts_in_uid_order_and_digests_are_recorded_once(catalog) {
    let items = [
        instance("1.2", "1.2.2", 3),
        instance("1.1", "1.1.2", 2),
        instance("1.1", "1.1.1", 1),
        instance("1.3", "1.3.1", 4),
    ];
    let commit = |items: &[NewInstance]| {
        catalog
            .commit(&CommitBatch {
                instances: items,
                policy: DuplicatePolicy::KeepFirst,
                events: &[],
                settled: &[],
                scan_from: None,
            })
            .expect("commit")
    };
    commit(&items);
    // A peer's different bytes for 1.1.1, kept as a conflict.
    let mut peer = instance("1.1", "1.1.1", 9);
    peer.series.series_uid = "1.1.9".into();
    peer.instance.blob.path = "conflict.dcm".into();
    peer.instance.blob.size = 900;
    peer.instance.dataset_offset = 180;
    peer.origin.actor = "PEER".into();
    peer.duplicate_policy = Some(DuplicatePolicy::KeepBoth);
    assert!(matches!(commit(std::slice::from_ref(&peer))[..], [CommitOutcome::Conflict { .. }]));

    let all = versions(catalog, VersionScope::All);
    let keys: Vec<(&str, &str, bool)> =
        all.iter().map(|v| (v.study_uid.as_str(), v.sop_uid.as_str(), v.current)).collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(
        &keys[..2],
        [("1.1", "1.1.1", true), ("1.1", "1.1.1", false)],
        "current first, by digest order of the union"
    );
    assert_eq!(
        keys.iter().map(|(study, sop, _)| (*study, *sop)).collect::<Vec<_>>(),
        [("1.1", "1.1.1"), ("1.1", "1.1.1"), ("1.1", "1.1.2"), ("1.2", "1.2.2"), ("1.3", "1.3.1")]
    );
    let conflict = all.iter().find(|v| !v.current).expect("the conflict is a held version");
    assert_eq!(
        (conflict.blob.path.as_str(), conflict.dataset_offset, conflict.blob.digest),
        ("conflict.dcm", 180, [9; 32])
    );
    assert_eq!(conflict.sop_class, "1.2.840.10008.5.1.4.1.1.7", "the class of the current instance");
    assert!(all.iter().filter(|v| v.sop_uid != "1.3.1").all(|v| v.dataset_digest.is_none()));
    assert_eq!(all[4].dataset_digest, Some([4 ^ 0xff; 32]), "the content digest recorded at ingest");

    assert_eq!(versions(catalog, VersionScope::Study("1.1")).len(), 3);
    assert_eq!(versions(catalog, VersionScope::Instance("1.1.1")).len(), 2);
    assert!(versions(catalog, VersionScope::Instance("9.9")).is_empty());

    // Versions without a content digest come by blob path, a page at a time.
    let first = catalog.undigested_versions("", 3).expect("first page");
    let paths: Vec<&str> = first.iter().map(|v| v.blob.path.as_str()).collect();
    assert_eq!(paths, ["2024/01/01/00/1.1.1.dcm", "2024/01/01/00/1.1.2.dcm", "2024/01/01/00/1.2.2.dcm"]);
    let rest = catalog.undigested_versions(paths[2], 3).expect("second page");
    assert_eq!(rest.iter().map(|v| v.blob.path.as_str()).collect::<Vec<_>>(), ["conflict.dcm"]);

    catalog
        .record_dataset_digests(&[("conflict.dcm".into(), [7; 32]), ("2024/01/01/00/1.1.2.dcm".into(), [8; 32])])
        .expect("record");
    let undigested: Vec<String> =
        catalog.undigested_versions("", 10).expect("undigested").into_iter().map(|v| v.blob.path).collect();
    assert_eq!(undigested, ["2024/01/01/00/1.1.1.dcm", "2024/01/01/00/1.2.2.dcm"]);
    let by_path = |path: &str| versions(catalog, VersionScope::All).into_iter().find(|v| v.blob.path == path);
    assert_eq!(by_path("conflict.dcm").and_then(|v| v.dataset_digest), Some([7; 32]));
}
}
