//! Coercion rules at ingest: an instance from a sender with rules is stored
//! rewritten (catalog and file), one from any other sender as received.

use std::io::Read;
use std::sync::Arc;

use haneul_core::{Archive, ArchiveConfig, CommitOutcome, IngestError, IngestFormat, Origin, RejectReason};
use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::coerce::CoercionRules;
use haneul_dicom::levels::InformationModel;
use haneul_dicom::matching::Query;
use haneul_dicom::meta::{encode_file_meta, read_layout, FileLayout, NewFileMeta};
use haneul_dicom::read::read_dataset_bytes;
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, ts, Dataset, Element, Tag, Value, VR};

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

fn instance(sop_uid: &str, study_uid: &str, pixel_bytes: usize) -> Vec<u8> {
    let mut ds = Dataset::new();
    for (tag, vr, value) in [
        (tags::SOP_CLASS_UID, VR::UI, CT_IMAGE),
        (tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        (tags::MODALITY, VR::CS, "CT"),
        (Tag(0x0009, 0x0010), VR::LO, "OLDPACS PRIVATE"),
        (Tag(0x0009, 0x1001), VR::LO, "internal"),
        (tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        (tags::PATIENT_ID, VR::LO, "12345"),
        (tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        (tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study_uid}.1")),
    ] {
        ds.put(Element::text(tag, vr, value));
    }
    ds.put(Element::new(tags::PIXEL_DATA, VR::OW, Value::Bytes(vec![0x5A; pixel_bytes])));
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: CT_IMAGE,
        sop_instance_uid: sop_uid,
        transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
        source_ae_title: Some("OLDPACS"),
    });
    write_dataset(&mut file, &ds, Encoding::EXPLICIT_LE, &SpecificCharacterSet::default()).expect("encodes");
    file
}

fn origin(actor: &str) -> Origin {
    Origin { actor: actor.into(), address: "local".into(), session: "test".into(), ..Origin::default() }
}

async fn store(archive: &Arc<Archive>, actor: &str, bytes: &[u8]) -> Result<haneul_core::IngestReport, IngestError> {
    let mut ingest = archive.begin_ingest(IngestFormat::Part10 { expected_study_uid: None }, origin(actor))?;
    for chunk in bytes.chunks(256 * 1024) {
        ingest.write(chunk).await?;
    }
    archive.finish_ingest(ingest).await
}

/// Patient ID and issuer of a study as the catalog answers a query.
async fn catalogued_patient(archive: &Archive, study_uid: &str) -> (String, String) {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
    identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    identifier.put(Element::empty(tags::PATIENT_ID, VR::LO));
    identifier.put(Element::empty(tags::ISSUER_OF_PATIENT_ID, VR::LO));
    let query = Query::from_identifier(&identifier, InformationModel::StudyRoot).expect("query");
    let mut found = archive.find(query, &origin("VIEWER"));
    let study = found.recv().await.expect("one study").expect("query runs");
    assert!(found.recv().await.is_none(), "one study only");
    let text = |tag| study.string(tag).unwrap_or_default().to_string();
    (text(tags::PATIENT_ID), text(tags::ISSUER_OF_PATIENT_ID))
}

/// The stored file of an instance, and its data set.
async fn stored(archive: &Archive, sop_uid: &str) -> (Vec<u8>, Dataset) {
    let found = archive.instances_by_sop_uid(vec![sop_uid.to_string()]).await.expect("lookup");
    let mut bytes = Vec::new();
    archive.open_instance(&found[0]).await.expect("opens").read_to_end(&mut bytes).expect("reads");
    let Ok(FileLayout::Part10(meta)) = read_layout(&mut bytes.as_slice()) else { panic!("stored file has no meta") };
    assert_eq!(meta.dataset_offset, found[0].dataset_offset);
    let syntax = ts::lookup(&meta.transfer_syntax_uid).expect("known syntax");
    let dataset = read_dataset_bytes(&bytes[meta.dataset_offset as usize..], syntax).expect("stored file parses");
    (bytes, dataset)
}

#[tokio::test]
async fn instances_from_a_sender_with_rules_are_stored_coerced() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = CoercionRules {
        issuer_of_patient_id: Some("HOSP_A".into()),
        patient_id_prefix: Some("A-".into()),
        remove_private_tags: true,
        modifying_system: "HANEUL".into(),
        source_of_previous_values: "OLDPACS".into(),
        ..CoercionRules::default()
    };
    let config = ArchiveConfig {
        audit: false,
        coercions: [("OLDPACS".to_string(), Arc::new(rules))].into(),
        replication_peers: vec!["PEER".into()],
        ..ArchiveConfig::new(dir.path().join("data"))
    };
    let archive = Archive::open(config).expect("opens");

    // Small (rewritten in memory) and larger than the ingest buffer (rewritten blob to blob).
    for (sop_uid, study_uid, pixels) in [("1.2.9.1", "1.2.9", 512), ("1.2.8.1", "1.2.8", 3 << 20)] {
        let received = instance(sop_uid, study_uid, pixels);
        let report = store(&archive, "OLDPACS", &received).await.expect("stored");
        assert_eq!(report.patient_id, "A-12345");
        assert_eq!(catalogued_patient(&archive, study_uid).await, ("A-12345".into(), "HOSP_A".into()));
        let (file, stored) = stored(&archive, sop_uid).await;
        assert_eq!(stored.string(tags::PATIENT_ID), Some("A-12345"));
        assert!(stored.iter().all(|e| e.tag.group() % 2 == 0), "private elements removed");
        let items = stored.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].string(tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION), Some("COERCE"));
        assert_eq!(items[0].string(tags::MODIFYING_SYSTEM), Some("HANEUL"));
        let original = &items[0].items(tags::MODIFIED_ATTRIBUTES_SEQUENCE)[0];
        assert_eq!(original.string(tags::PATIENT_ID), Some("12345"));
        assert_eq!(original.string(Tag(0x0009, 0x0010)), Some("OLDPACS PRIVATE"));
        assert!(original.contains(tags::ISSUER_OF_PATIENT_ID));

        // The content digest is that of the coerced data set: a peer's copy under another file meta group is the same.
        let Ok(FileLayout::Part10(meta)) = read_layout(&mut file.as_slice()) else { panic!("no meta") };
        let mut copy = encode_file_meta(&NewFileMeta {
            sop_class_uid: CT_IMAGE,
            sop_instance_uid: sop_uid,
            transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
            source_ae_title: Some("PEER"),
        });
        copy.extend_from_slice(&file[meta.dataset_offset as usize..]);
        assert_ne!(copy[..meta.dataset_offset as usize], file[..meta.dataset_offset as usize]);
        let report = store(&archive, "PEER", &copy).await.expect("peer's copy");
        assert_eq!(report.outcome, CommitOutcome::AlreadyStored, "{sop_uid}");
    }
    assert_eq!(archive.metrics().ingest_coerced.get(), 2);
    assert!(archive.render_metrics().contains("haneul_ingest_coerced_total 2\n"));
    // One file per stored instance: the received blobs were removed.
    let files = walk(&dir.path().join("data").join(haneul_core::BLOB_DIR));
    assert_eq!(files, 2, "one blob per instance");

    // Another sender's instance is stored byte for byte.
    let received = instance("1.2.7.1", "1.2.7", 512);
    store(&archive, "MODALITY", &received).await.expect("stored");
    assert_eq!(catalogued_patient(&archive, "1.2.7").await, ("12345".into(), String::new()));
    let found = archive.instances_by_sop_uid(vec!["1.2.7.1".into()]).await.expect("lookup");
    let mut bytes = Vec::new();
    archive.open_instance(&found[0]).await.expect("opens").read_to_end(&mut bytes).expect("reads");
    assert!(bytes == received);

    // What the rules cannot apply to is refused and leaves no file behind.
    let mut truncated = instance("1.2.6.1", "1.2.6", 2 << 20);
    truncated.truncate(truncated.len() - 10);
    let error = store(&archive, "OLDPACS", &truncated).await.expect_err("refused");
    assert!(matches!(error, IngestError::Rejected { reason: RejectReason::Unreadable, .. }), "{error}");
    assert!(error.to_string().contains("coercion failed"), "{error}");
    assert_eq!(walk(&dir.path().join("data").join(haneul_core::BLOB_DIR)), 3);
    archive.shutdown().await;
}

/// Number of files with content under a directory (the blob pool keeps empty ones ready).
fn walk(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("lists") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            count += walk(&path);
        } else if std::fs::metadata(&path).expect("metadata").len() > 0 {
            count += 1;
        }
    }
    count
}
