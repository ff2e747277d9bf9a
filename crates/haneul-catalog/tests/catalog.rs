//! The SQLite catalog against its contract: hierarchy, counts, duplicates,
//! removal, unsettled blobs, and — most important — that narrowing with
//! indexes never hides a match the shared matcher would accept.

use haneul_catalog::*;

#[macro_use]
mod engines;
use haneul_dicom::levels::InformationModel;
use haneul_dicom::matching::Query;
use haneul_dicom::{tags, Dataset, Element, Value, VR};

fn ds(elements: &[(haneul_dicom::Tag, VR, &str)]) -> Dataset {
    elements.iter().map(|(tag, vr, value)| Element::text(*tag, *vr, *value)).collect()
}

struct Spec<'a> {
    patient_id: &'a str,
    name: &'a str,
    study: &'a str,
    date: &'a str,
    series: &'a str,
    modality: &'a str,
    sop: &'a str,
}

fn instance(spec: &Spec<'_>, digest_byte: u8) -> NewInstance {
    NewInstance {
        patient: PatientFacts {
            patient_id: spec.patient_id.into(),
            name: spec.name.into(),
            attrs: ds(&[(tags::PATIENT_ID, VR::LO, spec.patient_id), (tags::PATIENT_NAME, VR::PN, spec.name)]),
            ..PatientFacts::default()
        },
        study: StudyFacts {
            study_uid: spec.study.into(),
            study_date: spec.date.into(),
            attrs: ds(&[(tags::STUDY_INSTANCE_UID, VR::UI, spec.study), (tags::STUDY_DATE, VR::DA, spec.date)]),
            ..StudyFacts::default()
        },
        series: SeriesFacts {
            series_uid: spec.series.into(),
            modality: spec.modality.into(),
            attrs: ds(&[(tags::SERIES_INSTANCE_UID, VR::UI, spec.series), (tags::MODALITY, VR::CS, spec.modality)]),
            ..SeriesFacts::default()
        },
        instance: InstanceFacts {
            sop_uid: spec.sop.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.7".into(),
            instance_number: Some(1),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            dataset_offset: 200,
            blob: BlobInfo {
                path: format!("2024/01/01/00/{}-{digest_byte}.dcm", spec.sop),
                size: 1000 + u64::from(digest_byte),
                digest: [digest_byte; 32],
            },
            content_digest: None,
            received_ms: 0,
            attrs: ds(&[(tags::SOP_INSTANCE_UID, VR::UI, spec.sop)]),
            blob_durable: true,
            write_ahead: None,
        },
        origin: Origin { actor: "TEST".into(), address: "local".into(), session: "t".into(), ..Origin::default() },
        duplicate_policy: None,
    }
}

fn commit(catalog: &dyn Catalog, items: &[NewInstance], policy: DuplicatePolicy) -> Vec<CommitOutcome> {
    catalog
        .commit(&CommitBatch { instances: items, policy, events: &[], settled: &[], scan_from: None })
        .expect("commit")
}

fn query(level: &str, keys: &[(haneul_dicom::Tag, VR, &str)]) -> Query {
    let mut identifier = ds(keys);
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level));
    Query::from_identifier(&identifier, InformationModel::PatientRoot).expect("valid query")
}

fn find(catalog: &dyn Catalog, query: &Query) -> Vec<Dataset> {
    find_skipping(catalog, query, 0)
}

fn find_skipping(catalog: &dyn Catalog, query: &Query, skip: usize) -> Vec<Dataset> {
    let mut found = Vec::new();
    catalog
        .find(query, skip, &mut |view| {
            found.push(view);
            true
        })
        .expect("find");
    found
}

fn spec<'a>(
    patient: &'a str,
    name: &'a str,
    study: &'a str,
    series: &'a str,
    modality: &'a str,
    sop: &'a str,
) -> Spec<'a> {
    Spec { patient_id: patient, name, study, date: "20240315", series, modality, sop }
}

on_every_engine! {
    fn hierarchy_and_counts(catalog) {
        let items = [
            instance(&spec("P1", "Hong^Gildong=洪^吉洞=홍^길동", "1.1", "1.1.1", "CT", "1.1.1.1"), 1),
            instance(&spec("P1", "Hong^Gildong=洪^吉洞=홍^길동", "1.1", "1.1.1", "CT", "1.1.1.2"), 2),
            instance(&spec("P1", "Hong^Gildong=洪^吉洞=홍^길동", "1.1", "1.1.2", "MR", "1.1.2.1"), 3),
            instance(&spec("P1", "Hong^Gildong=洪^吉洞=홍^길동", "1.2", "1.2.1", "CR", "1.2.1.1"), 4),
        ];
        assert!(commit(catalog, &items, DuplicatePolicy::KeepFirst).iter().all(|o| *o == CommitOutcome::Stored));
        let study = query(
            "STUDY",
            &[
                (tags::STUDY_INSTANCE_UID, VR::UI, "1.1"),
                (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""),
                (tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, ""),
                (tags::MODALITIES_IN_STUDY, VR::CS, ""),
                (tags::NUMBER_OF_PATIENT_RELATED_STUDIES, VR::IS, ""),
            ],
        );
        let views = find(catalog, &study);
        assert_eq!(views.len(), 1);
        let view = &views[0];
        assert_eq!(view.string(tags::NUMBER_OF_STUDY_RELATED_INSTANCES), Some("3"));
        assert_eq!(view.string(tags::NUMBER_OF_STUDY_RELATED_SERIES), Some("2"));
        assert_eq!(view.strings(tags::MODALITIES_IN_STUDY), ["CT", "MR"]);
        assert_eq!(view.string(tags::NUMBER_OF_PATIENT_RELATED_STUDIES), Some("2"));
        let statistics = catalog.statistics().expect("statistics");
        assert_eq!((statistics.patients, statistics.studies, statistics.series, statistics.instances), (1, 2, 3, 4));
    }
}

on_every_engine! {
    fn skipped_matches_are_the_first_ones_with_or_without_keys_to_match(catalog) {
        // Skipped by the database where every row matches (no key), after
        // matching otherwise: the same pages either way.
        let items: Vec<NewInstance> = (1..=6)
            .map(|n| {
                let (patient, name) = if n % 2 == 0 { ("P2", "Kim^Minji") } else { ("P1", "Lee^Seoyeon") };
                let (study, series, sop) = (format!("2.{n}"), format!("2.{n}.1"), format!("2.{n}.1.1"));
                instance(&spec(patient, name, &study, &series, "CT", &sop), n as u8)
            })
            .collect();
        assert!(commit(catalog, &items, DuplicatePolicy::KeepFirst).iter().all(|o| *o == CommitOutcome::Stored));
        let uids = |views: Vec<Dataset>| -> Vec<String> {
            views.iter().filter_map(|view| view.string(tags::STUDY_INSTANCE_UID).map(str::to_string)).collect()
        };
        let every = query("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "")]);
        let kims = query("STUDY", &[(tags::PATIENT_NAME, VR::PN, "Kim*"), (tags::STUDY_INSTANCE_UID, VR::UI, "")]);
        for (query, whole) in [(&every, 6), (&kims, 3)] {
            let all = uids(find(catalog, query));
            assert_eq!(all.len(), whole);
            // usize::MAX: beyond what the database's own integers hold.
            for skip in [1, 2, whole, whole + 3, usize::MAX] {
                let rest = uids(find_skipping(catalog, query, skip));
                assert_eq!(rest, all[skip.min(whole)..], "skipping {skip} of {all:?}");
            }
        }
    }
}

on_every_engine! {
    fn duplicate_policies(catalog) {
        let first = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "9.9"), 1);
        assert_eq!(commit(catalog, std::slice::from_ref(&first), DuplicatePolicy::KeepFirst), [CommitOutcome::Stored]);
        assert_eq!(
            commit(catalog, std::slice::from_ref(&first), DuplicatePolicy::KeepFirst),
            [CommitOutcome::AlreadyStored]
        );
        let other = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "9.9"), 2);
        assert_eq!(
            commit(catalog, std::slice::from_ref(&other), DuplicatePolicy::KeepFirst),
            [CommitOutcome::DuplicateIgnored]
        );
        assert!(matches!(
            commit(catalog, std::slice::from_ref(&other), DuplicatePolicy::Reject)[..],
            [CommitOutcome::DuplicateRejected { .. }]
        ));
        let stored = catalog.instances_by_sop_uid(&["9.9".into()]).expect("lookup");
        assert_eq!(stored[0].blob.digest, [1; 32], "the first copy is still current");

        let replaced = commit(catalog, std::slice::from_ref(&other), DuplicatePolicy::Replace);
        assert_eq!(replaced, [CommitOutcome::Replaced { superseded_path: first.instance.blob.path.clone() }]);
        let stored = catalog.instances_by_sop_uid(&["9.9".into()]).expect("lookup");
        assert_eq!(stored[0].blob.digest, [2; 32]);
        let referenced = catalog.referenced_paths("2024/01/01/00/").expect("paths");
        assert!(referenced.contains(&first.instance.blob.path), "the superseded file stays referenced");
        assert!(referenced.contains(&other.instance.blob.path));

        let kinds: Vec<String> = catalog.events_after(0, 100).expect("events").into_iter().map(|e| e.kind).collect();
        for kind in
            ["instance-stored", "duplicate-identical", "duplicate-kept-first", "duplicate-rejected", "instance-replaced"]
        {
            assert!(kinds.iter().any(|k| k == kind), "{kind} not journaled: {kinds:?}");
        }
    }
}

on_every_engine! {
    fn replicated_conflicts_keep_both_versions(catalog) {
        let local = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "9.9"), 1);
        assert_eq!(commit(catalog, std::slice::from_ref(&local), DuplicatePolicy::KeepFirst), [CommitOutcome::Stored]);
        let from_peer = |digest_byte| NewInstance {
            origin: Origin { actor: "SITE_B".into(), ..local.origin.clone() },
            duplicate_policy: Some(DuplicatePolicy::KeepBoth),
            ..instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "9.9"), digest_byte)
        };
        // The batch's policy is overridden by the instance's.
        assert_eq!(
            commit(catalog, &[from_peer(2)], DuplicatePolicy::Reject),
            [CommitOutcome::Conflict { current_digest: [1; 32] }]
        );
        assert_eq!(commit(catalog, &[from_peer(2)], DuplicatePolicy::KeepFirst), [CommitOutcome::AlreadyStored]);
        assert_eq!(commit(catalog, &[from_peer(1)], DuplicatePolicy::KeepFirst), [CommitOutcome::AlreadyStored]);
        // Another file (its meta group names another sender) around the same data set.
        let with_content = |digest_byte, content_byte| {
            let mut item = from_peer(digest_byte);
            item.instance.content_digest = Some([content_byte; 32]);
            item.instance.blob.path = format!("2024/01/01/00/other-{digest_byte}.dcm");
            item
        };
        assert_eq!(
            commit(catalog, &[with_content(7, 2)], DuplicatePolicy::KeepFirst),
            [CommitOutcome::Conflict { current_digest: [1; 32] }]
        );
        assert_eq!(commit(catalog, &[with_content(8, 2)], DuplicatePolicy::KeepFirst), [CommitOutcome::AlreadyStored]);

        let stored = catalog.instances_by_sop_uid(&["9.9".into()]).expect("lookup");
        assert_eq!(stored[0].blob.digest, [1; 32], "the local copy stays current");
        let conflicts = catalog.conflicts(None).expect("conflicts");
        assert_eq!(conflicts.len(), 2);
        assert_eq!((conflicts[0].sop_uid.as_str(), conflicts[0].source_ae.as_str()), ("9.9", "SITE_B"));
        assert_eq!(conflicts[0].blob.digest, [2; 32]);
        assert_eq!(conflicts[0].current_digest.as_deref(), Some("01".repeat(32).as_str()));
        assert_eq!(catalog.conflicts(Some("other")).expect("conflicts").len(), 0);
        let conflict_path = from_peer(2).instance.blob.path;
        assert!(catalog.referenced_paths("2024/").expect("paths").contains(&conflict_path));
        let kinds: Vec<String> = catalog.events_after(0, 100).expect("events").into_iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&"replication-conflict".to_string()), "{kinds:?}");

        let removed = catalog.remove_instances(&["9.9".into()], None, RemovalKind::Deliberate).expect("remove");
        assert!(removed.trashed_paths.contains(&conflict_path), "removal takes the conflicting version too");
        assert!(catalog.conflicts(None).expect("conflicts").is_empty());
    }
}

on_every_engine! {
    fn a_deliberate_removal_is_not_undone_by_a_peer_but_by_a_new_store(catalog) {
        let item = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "9.9"), 1);
        let from_peer = NewInstance { duplicate_policy: Some(DuplicatePolicy::KeepBoth), ..item.clone() };
        assert_eq!(commit(catalog, std::slice::from_ref(&item), DuplicatePolicy::KeepFirst), [CommitOutcome::Stored]);
        catalog.remove_instances(&["9.9".into()], None, RemovalKind::Undo).expect("undo");
        assert_eq!(
            commit(catalog, std::slice::from_ref(&from_peer), DuplicatePolicy::KeepFirst),
            [CommitOutcome::Stored],
            "an undone store is not remembered"
        );
        catalog.remove_instances(&["9.9".into()], None, RemovalKind::Deliberate).expect("remove");
        assert_eq!(
            commit(catalog, std::slice::from_ref(&from_peer), DuplicatePolicy::KeepFirst),
            [CommitOutcome::RemovedHere]
        );
        assert!(catalog.instances_by_sop_uid(&["9.9".into()]).expect("lookup").is_empty());
        assert_eq!(
            commit(catalog, std::slice::from_ref(&item), DuplicatePolicy::KeepFirst),
            [CommitOutcome::Stored],
            "a modality may store it again"
        );
        catalog.remove_instances(&["9.9".into()], None, RemovalKind::Deliberate).expect("remove");
        assert_eq!(commit(catalog, std::slice::from_ref(&item), DuplicatePolicy::KeepFirst), [CommitOutcome::Stored]);
        catalog.remove_instances(&["9.9".into()], None, RemovalKind::Undo).expect("undo");
        assert_eq!(
            commit(catalog, std::slice::from_ref(&from_peer), DuplicatePolicy::KeepFirst),
            [CommitOutcome::Stored],
            "the new store ended the removal"
        );
    }
}

on_every_engine! {
    fn removal_cleans_up_parents_and_summaries(catalog) {
        let items = [
            instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.1"), 1),
            instance(&spec("P1", "A", "1.1", "1.1.2", "MR", "1.1.2.1"), 2),
        ];
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        let removed =
            catalog.remove_instances(&["1.1.2.1".into(), "nope".into()], None, RemovalKind::Deliberate).expect("remove");
        assert_eq!(removed.instances.len(), 1);
        assert_eq!(removed.trashed_paths, vec![items[1].instance.blob.path.clone()]);
        assert_eq!(catalog.trash().expect("trash"), removed.trashed_paths, "files wait in the trash until deleted");
        catalog.empty_trash(&removed.trashed_paths).expect("empty");
        assert!(catalog.trash().expect("trash").is_empty());
        let views = find(catalog, &query("STUDY", &[(tags::MODALITIES_IN_STUDY, VR::CS, "")]));
        assert_eq!(views[0].strings(tags::MODALITIES_IN_STUDY), ["CT"]);
        catalog.remove_instances(&["1.1.1.1".into()], None, RemovalKind::Deliberate).expect("remove");
        let statistics = catalog.statistics().expect("statistics");
        assert_eq!((statistics.patients, statistics.studies, statistics.series, statistics.instances), (0, 0, 0, 0));
    }
}

on_every_engine! {
    fn unsettled_blobs_are_listed_until_settled(catalog) {
        let mut item = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.1"), 1);
        item.instance.blob_durable = false;
        commit(catalog, std::slice::from_ref(&item), DuplicatePolicy::KeepFirst);
        let unsettled = catalog.unsettled_instances().expect("unsettled");
        assert_eq!(unsettled.len(), 1);
        assert!(!unsettled[0].settled);
        let settled = [item.instance.blob.path.clone()];
        catalog.commit(&CommitBatch { settled: &settled, ..CommitBatch::events(&[]) }).expect("settle");
        assert!(catalog.unsettled_instances().expect("unsettled").is_empty());
        assert!(catalog.instances_by_sop_uid(&["1.1.1.1".into()]).expect("lookup")[0].settled);

        // Many settled at once (more than one statement takes), one left unsettled.
        let sops: Vec<String> = (0..250).map(|n| format!("1.1.2.{n}")).collect();
        let items: Vec<NewInstance> = sops
            .iter()
            .map(|sop| {
                let mut item = instance(&spec("P1", "A", "1.1", "1.1.2", "CT", sop), 2);
                item.instance.blob_durable = false;
                item
            })
            .collect();
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        assert_eq!(catalog.unsettled_instances().expect("unsettled").len(), 250);
        let settled: Vec<String> = items[1..].iter().map(|item| item.instance.blob.path.clone()).collect();
        catalog.commit(&CommitBatch { settled: &settled, ..CommitBatch::events(&[]) }).expect("settle");
        let left = catalog.unsettled_instances().expect("unsettled");
        assert_eq!(left.iter().map(|instance| instance.sop_uid.as_str()).collect::<Vec<_>>(), ["1.1.2.0"]);
    }
}

on_every_engine! {
    fn write_ahead_bytes_are_kept_until_settled_or_removed(catalog) {
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut kept = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.1"), 1);
        kept.instance.blob_durable = false;
        kept.instance.write_ahead = Some(bytes.clone());
        let mut removed = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.2"), 2);
        removed.instance.blob_durable = false;
        removed.instance.write_ahead = Some(vec![7; 10]);
        let mut plain = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.3"), 3);
        plain.instance.blob_durable = false;
        commit(catalog, &[kept.clone(), removed.clone(), plain.clone()], DuplicatePolicy::KeepFirst);

        assert_eq!(catalog.write_ahead(&kept.instance.blob.path).expect("read"), Some(bytes), "bytes kept whole");
        let found = catalog.instances_by_sop_uid(&["1.1.1.1".into(), "1.1.1.3".into()]).expect("lookup");
        let durable: Vec<bool> = found.iter().map(|instance| instance.settled).collect();
        assert_eq!(durable, [true, false], "bytes committed with the entry are durable; a running fsync is not");
        assert_eq!(catalog.write_ahead(&plain.instance.blob.path).expect("read"), None, "none were given");
        assert_eq!(catalog.write_ahead("nowhere/at/all").expect("read"), None);

        catalog.remove_instances(&["1.1.1.2".into()], None, RemovalKind::Deliberate).expect("remove");
        assert_eq!(catalog.write_ahead(&removed.instance.blob.path).expect("read"), None, "gone with its instance");

        let settled = [kept.instance.blob.path.clone()];
        catalog.commit(&CommitBatch { settled: &settled, ..CommitBatch::events(&[]) }).expect("settle");
        assert_eq!(catalog.write_ahead(&kept.instance.blob.path).expect("read"), None, "dropped once settled");
        assert_eq!(catalog.unsettled_instances().expect("unsettled").len(), 1, "only the plain one is left");
    }
}

/// A tiny deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

on_every_engine! {
    fn narrowing_never_hides_a_match(catalog) {
        let names = [
            "Kim^Minjun=金^敏俊=김^민준",
            "Kim^Mina==김^미나",
            "Lee^Jiho=李^智浩=이^지호",
            "kim^j[x]",
            "O'Brien^Pat",
            "Park^Sua",
        ];
        let modalities = ["CT", "MR", "CR", "US"];
        let dates = ["20230101", "20231231", "20240315", "2024.06.01", ""];
        let mut rng = Rng(0x5EED);
        let mut items = Vec::new();
        for index in 0..120 {
            let patient = format!("P{}", index % 17);
            let name = names[index % 17 % names.len()];
            let study = format!("1.{}", index % 40);
            let series = format!("1.{}.{}", index % 40, index % 3);
            let sop = format!("1.{}.{}.{index}", index % 40, index % 3);
            let modality = rng.pick(&modalities);
            let date = rng.pick(&dates);
            let mut item = instance(&spec(&patient, name, &study, &series, modality, &sop), (index % 250) as u8);
            item.study.study_date = haneul_dicom::matching::normalize_temporal(VR::DA, date).unwrap_or_default();
            item.study.attrs.put(Element::text(tags::STUDY_DATE, VR::DA, date));
            items.push(item);
        }
        for chunk in items.chunks(25) {
            commit(catalog, chunk, DuplicatePolicy::KeepFirst);
        }
        let name_patterns = ["kim*", "KIM^MIN*", "김*", "=金*", "*^mina", "?ee*", "kim^j[x]", "O'B*", "Park^Sua", ""];
        for level in ["PATIENT", "STUDY", "SERIES", "IMAGE"] {
            let everything = find(catalog, &query(level, &[]));
            for pattern in name_patterns {
                for (date, modality) in [("", ""), ("2024-", ""), ("-20231231", "CT"), ("", "M?"), ("20240601", "")] {
                    let mut keys = vec![(tags::PATIENT_NAME, VR::PN, pattern)];
                    if level != "PATIENT" {
                        keys.push((tags::STUDY_DATE, VR::DA, date));
                    }
                    if level == "SERIES" || level == "IMAGE" {
                        keys.push((tags::MODALITY, VR::CS, modality));
                    }
                    let query = query(level, &keys);
                    let narrowed = find(catalog, &query).len();
                    let brute_force = everything.iter().filter(|view| query.matches(view)).count();
                    assert_eq!(
                        narrowed, brute_force,
                        "level {level}, name {pattern:?}, date {date:?}, modality {modality:?}"
                    );
                }
            }
        }
        let hangul = find(catalog, &query("PATIENT", &[(tags::PATIENT_NAME, VR::PN, "김*")]));
        assert!(!hangul.is_empty(), "Hangul prefix finds patients");
    }
}

on_every_engine! {
    fn stored_text_survives_a_round_trip_with_binary_values(catalog) {
        let mut item = instance(&spec("P1", "A", "1.1", "1.1.1", "CT", "1.1.1.1"), 1);
        item.instance.attrs.put(Element::new(tags::ROWS, VR::US, Value::U16(vec![512])));
        commit(catalog, &[item], DuplicatePolicy::KeepFirst);
        let views = find(catalog, &query("IMAGE", &[(tags::ROWS, VR::US, "")]));
        assert_eq!(views[0].int(tags::ROWS), Some(512));
    }
}

on_every_engine! {
    /// Studies keep the site of their first instance; a query limited to sites
    /// sees, at every level, only what lies under studies of those sites.
    fn queries_limited_to_sites_see_only_those_sites(catalog) {
        let at =
            |site: &str, item: NewInstance| NewInstance { origin: Origin { site: site.into(), ..item.origin }, ..item };
        let items = [
            at("seoul", instance(&spec("P1", "Kim^A", "7.1", "7.1.1", "CT", "7.1.1.1"), 1)),
            at("busan", instance(&spec("P1", "Kim^A", "7.2", "7.2.1", "MR", "7.2.1.1"), 2)),
            at("busan", instance(&spec("P2", "Lee^B", "7.3", "7.3.1", "CT", "7.3.1.1"), 3)),
            // A later instance from another site does not move the study.
            at("busan", instance(&spec("P1", "Kim^A", "7.1", "7.1.1", "CT", "7.1.1.2"), 4)),
        ];
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        let scoped = |level: &str, sites: &[&str]| {
            let mut query = query(level, &[]);
            query.sites = sites.iter().map(|site| site.to_string()).collect();
            query
        };
        let uids = |found: Vec<Dataset>, tag| {
            let mut uids: Vec<String> = found.iter().filter_map(|view| view.string(tag).map(str::to_string)).collect();
            uids.sort();
            uids
        };
        assert_eq!(uids(find(catalog, &scoped("STUDY", &["seoul"])), tags::STUDY_INSTANCE_UID), vec!["7.1"]);
        assert_eq!(uids(find(catalog, &scoped("STUDY", &["busan"])), tags::STUDY_INSTANCE_UID), vec!["7.2", "7.3"]);
        assert_eq!(uids(find(catalog, &scoped("STUDY", &[])), tags::STUDY_INSTANCE_UID).len(), 3, "no limit");
        assert_eq!(uids(find(catalog, &scoped("PATIENT", &["seoul"])), tags::PATIENT_ID), vec!["P1"]);
        assert_eq!(uids(find(catalog, &scoped("PATIENT", &["busan"])), tags::PATIENT_ID), vec!["P1", "P2"]);
        assert_eq!(uids(find(catalog, &scoped("IMAGE", &["seoul"])), tags::SOP_INSTANCE_UID), vec!["7.1.1.1", "7.1.1.2"]);
        assert!(find(catalog, &scoped("SERIES", &["daegu"])).is_empty());
        let retrieve = catalog.find_instances(&scoped("STUDY", &["busan"])).expect("find_instances");
        assert_eq!(retrieve.len(), 2);
    }
}

/// A catalog made before studies had a site is upgraded in place.
#[test]
fn a_version_2_catalog_gets_the_site_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.sqlite");
    drop(SqliteCatalog::open(&path).expect("open"));
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch("DROP INDEX studies_site; ALTER TABLE studies DROP COLUMN site;").unwrap();
        connection.pragma_update(None, "user_version", 2).unwrap();
    }
    let catalog: &dyn Catalog = &SqliteCatalog::open(&path).expect("the upgrade");
    commit(catalog, &[instance(&spec("P1", "Kim^A", "8.1", "8.1.1", "CT", "8.1.1.1"), 1)], DuplicatePolicy::KeepFirst);
    let mut query = query("STUDY", &[]);
    query.sites = vec![String::new()];
    assert_eq!(find(catalog, &query).len(), 1, "studies stored without a site have the empty site");
    let connection = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, 9);
}

#[test]
fn a_version_7_catalog_gains_the_write_ahead_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    drop(SqliteCatalog::open(&path).expect("open"));
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch("ALTER TABLE unsettled DROP COLUMN write_ahead;").unwrap();
        connection.pragma_update(None, "user_version", 7).unwrap();
    }
    let catalog: &dyn Catalog = &SqliteCatalog::open(&path).expect("the upgrade");
    let mut item = instance(&spec("P1", "Kim^A", "8.1", "8.1.1", "CT", "8.1.1.1"), 1);
    item.instance.blob_durable = false;
    item.instance.write_ahead = Some(b"bytes".to_vec());
    commit(catalog, std::slice::from_ref(&item), DuplicatePolicy::KeepFirst);
    assert_eq!(catalog.write_ahead(&item.instance.blob.path).expect("read"), Some(b"bytes".to_vec()));
}

fn register(
    level: CorrectionLevel,
    key: &str,
    tag: haneul_dicom::Tag,
    vr: &str,
    value: &str,
    hlc: i64,
    origin: &str,
) -> CorrectionRecord {
    CorrectionRecord {
        level,
        key: key.into(),
        tag: haneul_dicom::model::tag_to_u32(tag),
        vr: vr.into(),
        value: value.into(),
        hlc,
        origin: origin.into(),
        reason: "typo".into(),
    }
}

on_every_engine! {
    /// Registers: the latest clock wins in any order of arrival, the values
    /// reach queries at once, and registers of a study not yet held apply
    /// when it is stored.
    fn corrections_converge_and_reach_queries(catalog) {
        let items = [instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.1"), 1)];
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        let by_name = |name: &str| query("PATIENT", &[(tags::PATIENT_NAME, VR::PN, name)]);
        let corrected = |catalog: &dyn Catalog| catalog.instances_by_sop_uid(&["1.1.1.1".into()]).expect("reads")[0].corrected;
        assert!(!corrected(catalog));
        let identity = catalog.study_corrections("1.1").expect("reads").patient_identity.expect("held");
        assert_eq!(identity, "P1\\");
        let name = |value: &str, hlc: i64, origin: &str| {
            register(CorrectionLevel::Patient, &identity, tags::PATIENT_NAME, "PN", value, hlc, origin)
        };
        let event = Event::new("attributes-corrected", &Origin::default());
        // Two sites corrected the same name at once: B's clock ties A's and B's origin is greater.
        let applied = catalog.correct(&[name("Kim^Minsu", 20 << 16, "SITEA")], &event).expect("correct");
        assert_eq!(applied.len(), 1);
        assert_eq!(catalog.correct(&[name("Lee^Jiwoo", 20 << 16, "SITEB")], &event).expect("correct").len(), 1);
        // Older, and the same again: neither changes anything nor is journaled.
        assert!(catalog.correct(&[name("Park^Old", 10 << 16, "SITEZ")], &event).expect("correct").is_empty());
        assert!(catalog.correct(&[name("Lee^Jiwoo", 20 << 16, "SITEB")], &event).expect("correct").is_empty());
        assert!(catalog.correct(&[name("Kim^Minsu", 20 << 16, "SITEA")], &event).expect("correct").is_empty());
        assert_eq!(find(catalog, &by_name("Lee*")).len(), 1, "the winning value is matched");
        assert!(find(catalog, &by_name("Hong*")).is_empty() && find(catalog, &by_name("Kim*")).is_empty());
        assert!(corrected(catalog));
        let journaled: Vec<_> = catalog.events_after(0, 100).expect("events").into_iter().filter(|e| e.kind == "attributes-corrected").collect();
        assert_eq!(journaled.len(), 2);
        assert_eq!(journaled[1].detail["corrections"][0]["value"], "Lee^Jiwoo");
        // A study-level register for a study that arrives later.
        let description = register(CorrectionLevel::Study, "1.2", tags::STUDY_DESCRIPTION, "LO", "CT CHEST", 30 << 16, "SITEA");
        catalog.correct(std::slice::from_ref(&description), &event).expect("correct");
        commit(catalog, &[instance(&spec("P1", "Hong^Gildong", "1.2", "1.2.1", "CT", "1.2.1.1"), 2)], DuplicatePolicy::KeepFirst);
        let study = find(catalog, &query("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2"), (tags::STUDY_DESCRIPTION, VR::LO, "CT*")]));
        assert_eq!(study.len(), 1);
        assert_eq!(study[0].string(tags::STUDY_DESCRIPTION), Some("CT CHEST"));
        assert_eq!(study[0].string(tags::PATIENT_NAME), Some("Lee^Jiwoo"));
        let held = catalog.study_corrections("1.2").expect("reads");
        assert_eq!(held.registers.len(), 2);
        assert_eq!(catalog.latest_correction_clock().expect("reads"), 30 << 16);
        let all = catalog.all_corrections().expect("reads");
        let held: Vec<(CorrectionLevel, &str, &str)> = all.iter().map(|r| (r.level, r.key.as_str(), r.value.as_str())).collect();
        assert_eq!(held, [(CorrectionLevel::Patient, identity.as_str(), "Lee^Jiwoo"), (CorrectionLevel::Study, "1.2", "CT CHEST")]);
    }
}

on_every_engine! {
    /// A study or series stays with the parent it was first stored under: an
    /// instance naming another is filed under the first and the mismatch is
    /// journaled. Rows made earlier in the same batch are seen by the next
    /// instance (one study, two SOP classes, one commit).
    fn instances_naming_another_parent_are_filed_under_the_first_and_journaled(catalog) {
        let mut ct = instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.1"), 1);
        let mut sr = instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.2", "SR", "1.1.2.1"), 2);
        ct.instance.sop_class = "1.2.840.10008.5.1.4.1.1.2".into();
        sr.instance.sop_class = "1.2.840.10008.5.1.4.1.1.88.11".into();
        assert_eq!(commit(catalog, &[ct, sr], DuplicatePolicy::KeepFirst), [CommitOutcome::Stored, CommitOutcome::Stored]);
        let study = find(catalog, &query("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1")]));
        assert_eq!(study.len(), 1);
        let classes = study[0].strings(haneul_dicom::levels::computed::SOP_CLASSES_IN_STUDY);
        assert_eq!(classes.len(), 2, "{classes:?}");

        // Study 1.1 under another patient, series 1.1.1 under another study.
        let other_patient = instance(&spec("P2", "Kim^Minsu", "1.1", "1.1.1", "CT", "1.1.1.2"), 3);
        let other_study = instance(&spec("P1", "Hong^Gildong", "1.9", "1.1.1", "CT", "1.9.1.1"), 4);
        commit(catalog, &[other_patient, other_study], DuplicatePolicy::KeepFirst);
        let kinds: Vec<(String, Option<String>)> = catalog
            .events_after(0, 100)
            .expect("events")
            .into_iter()
            .filter(|event| event.kind.ends_with("-mismatch"))
            .map(|event| (event.kind, event.sop_uid))
            .collect();
        assert_eq!(
            kinds,
            [("patient-mismatch".to_string(), Some("1.1.1.2".to_string())), ("study-mismatch".to_string(), Some("1.9.1.1".to_string()))]
        );
        let in_series = find(catalog, &query("IMAGE", &[(tags::PATIENT_ID, VR::LO, "P1"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::SERIES_INSTANCE_UID, VR::UI, "1.1.1")]));
        let sops: Vec<&str> = in_series.iter().filter_map(|view| view.string(tags::SOP_INSTANCE_UID)).collect();
        assert_eq!(sops.len(), 3, "every instance of series 1.1.1 is under P1's study 1.1: {sops:?}");
        assert!(
            find(catalog, &query("PATIENT", &[(tags::PATIENT_ID, VR::LO, "P2")])).is_empty(),
            "no patient row is made for what an instance of a held study names"
        );
    }
}

on_every_engine! {
    /// A series register changes its series row (what SERIES-level queries
    /// match and answer), applies to a series stored after it, and reaches
    /// the copies of that series' instances only.
    fn series_registers_correct_their_series_only(catalog) {
        let items = [
            instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.1"), 1),
            instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.2", "CT", "1.1.2.1"), 2),
        ];
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        let event = Event::new("attributes-corrected", &Origin::default());
        let described = |series: &str, value: &str, hlc: i64| {
            register(CorrectionLevel::Series, series, tags::SERIES_DESCRIPTION, "LO", value, hlc, "SITEA")
        };
        catalog.correct(&[described("1.1.1", "AXIAL 5MM", 10 << 16), described("1.1.3", "LATER", 10 << 16)], &event).expect("correct");
        let series = |description: &str| {
            let found = find(catalog, &query("SERIES", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::SERIES_DESCRIPTION, VR::LO, description)]));
            found.iter().filter_map(|view| view.string(tags::SERIES_INSTANCE_UID).map(str::to_string)).collect::<Vec<_>>()
        };
        assert_eq!(series("AXIAL*"), ["1.1.1"]);
        let corrected = |sop: &str| catalog.instances_by_sop_uid(&[sop.into()]).expect("reads")[0].corrected;
        assert!(corrected("1.1.1.1") && !corrected("1.1.2.1"), "only the corrected series' instances");
        let held = catalog.study_corrections("1.1").expect("reads");
        assert_eq!(held.to_apply("1.1.1").len(), 1);
        assert!(held.to_apply("1.1.2").is_empty());
        commit(catalog, &[instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.3", "CT", "1.1.3.1"), 3)], DuplicatePolicy::KeepFirst);
        assert_eq!(series("LATER"), ["1.1.3"], "a register before its series applies when it arrives");
    }
}

on_every_engine! {
    /// A Patient ID register moves a study to that patient: queries find it
    /// there with that patient's attributes, a patient left without studies
    /// is gone, a patient not held is made from the one the study leaves,
    /// later instances and studies that arrive after the register follow it,
    /// and an older register does not move it back.
    fn a_patient_id_register_moves_the_study_to_that_patient(catalog) {
        let items = [
            instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.1"), 1),
            instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.2"), 2),
            instance(&spec("P2", "Kim^Minsu", "2.1", "2.1.1", "MR", "2.1.1.1"), 3),
        ];
        commit(catalog, &items, DuplicatePolicy::KeepFirst);
        let event = Event::new("attributes-corrected", &Origin::default());
        let move_to = |study: &str, id: &str, hlc: i64| {
            [
                register(CorrectionLevel::Study, study, tags::PATIENT_ID, "LO", id, hlc, "SITEA"),
                register(CorrectionLevel::Study, study, tags::ISSUER_OF_PATIENT_ID, "LO", "", hlc, "SITEA"),
            ]
        };
        let patient = |id: &str| find(catalog, &query("PATIENT", &[(tags::PATIENT_ID, VR::LO, id)]));
        let studies_of = |id: &str| {
            let found = find(catalog, &query("STUDY", &[(tags::PATIENT_ID, VR::LO, id)]));
            let mut uids: Vec<String> = found.iter().filter_map(|view| view.string(tags::STUDY_INSTANCE_UID).map(str::to_string)).collect();
            uids.sort();
            (uids, found.first().and_then(|view| view.string(tags::PATIENT_NAME).map(str::to_string)))
        };

        assert_eq!(catalog.correct(&move_to("1.1", "P2", 10 << 16), &event).expect("correct").len(), 2);
        assert!(patient("P1").is_empty(), "the patient left without studies is removed");
        assert_eq!(studies_of("P2"), (vec!["1.1".to_string(), "2.1".to_string()], Some("Kim^Minsu".to_string())));
        let images = find(catalog, &query("IMAGE", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1")]));
        assert!(images.iter().all(|view| view.string(tags::PATIENT_ID) == Some("P2")), "{images:?}");
        assert!(catalog.instances_by_sop_uid(&["1.1.1.1".into()]).expect("reads")[0].corrected);
        let held = catalog.study_corrections("1.1").expect("reads");
        assert_eq!(held.patient_identity.as_deref(), Some("P2\\"));
        let overlay: Vec<(u32, &str)> = held.moved_to.iter().map(|r| (r.tag, r.value.as_str())).collect();
        assert!(overlay.contains(&(haneul_dicom::model::tag_to_u32(tags::PATIENT_NAME), "Kim^Minsu")), "{overlay:?}");
        assert!(held.moved_to.iter().all(|r| r.level == CorrectionLevel::Patient && r.hlc == 10 << 16));
        assert_eq!(held.to_apply("1.1.1").len(), held.moved_to.len() + 2);
        assert!(catalog.study_corrections("2.1").expect("reads").moved_to.is_empty(), "not moved: no overlay");

        // A later instance of the moved study, naming the patient it left, joins it where it is: expected, not noted.
        commit(catalog, &[instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.2", "CT", "1.1.2.1"), 4)], DuplicatePolicy::KeepFirst);
        assert!(patient("P1").is_empty());
        assert_eq!(studies_of("P2").0.len(), 2);
        assert!(!catalog.events_after(0, 100).expect("events").iter().any(|e| e.kind == "patient-mismatch"));

        // An older register does not move it back; the same one changes nothing.
        assert!(catalog.correct(&move_to("1.1", "P1", 5 << 16), &event).expect("correct").is_empty());
        assert!(catalog.correct(&move_to("1.1", "P2", 10 << 16), &event).expect("correct").is_empty());
        assert!(patient("P1").is_empty());

        // To a patient not held: made from its identity and registers, nothing of the one the study leaves.
        let named = register(CorrectionLevel::Patient, "P9\\", tags::PATIENT_NAME, "PN", "Park^Jiho", 20 << 16, "SITEA");
        let mut registers = vec![named];
        registers.extend(move_to("2.1", "P9", 20 << 16));
        catalog.correct(&registers, &event).expect("correct");
        assert_eq!(studies_of("P9"), (vec!["2.1".to_string()], Some("Park^Jiho".to_string())));
        assert_eq!(studies_of("P2").0, ["1.1"], "P2 keeps its other study");
        assert_eq!(catalog.studies_of_patient("P9\\").expect("reads"), [("2.1".to_string(), String::new())]);
        catalog.correct(&move_to("2.1", "P10", 21 << 16), &event).expect("correct");
        assert_eq!(studies_of("P10"), (vec!["2.1".to_string()], None), "no name given: none");
        assert!(patient("P9").is_empty());

        // A register that arrives before its study (a peer's): the study is filed where it says.
        catalog.correct(&move_to("3.1", "P2", 30 << 16), &event).expect("correct");
        commit(catalog, &[instance(&spec("P3", "Lee^Jiwoo", "3.1", "3.1.1", "CT", "3.1.1.1"), 5)], DuplicatePolicy::KeepFirst);
        assert!(patient("P3").is_empty(), "the patient its files name is not kept");
        assert_eq!(studies_of("P2").0, ["1.1", "3.1"]);
    }
}

/// A catalog of `patients` patients, one study of two instances each, with
/// Latin and Korean names and study dates over three years; statistics gathered.
fn fill_for_plans(catalog: &dyn Catalog, patients: usize) {
    const SURNAMES: [(&str, &str); 5] = [("KIM", "김"), ("LEE", "이"), ("PARK", "박"), ("CHOI", "최"), ("JUNG", "정")];
    let mut batch = Vec::new();
    for n in 0..patients {
        let (latin, korean) = SURNAMES[n % SURNAMES.len()];
        let name = format!("{latin}^GIVEN{n:05}={korean}^이름{n:05}");
        let (patient, study, series) = (format!("P{n:05}"), format!("1.2.{n}"), format!("1.2.{n}.1"));
        for i in 0..2 {
            let sop = format!("1.2.{n}.1.{i}");
            let mut item = instance(&spec(&patient, &name, &study, &series, "CT", &sop), (n % 250) as u8);
            let date = format!("20{:02}{:02}{:02}", 22 + n % 3, 1 + n % 12, 1 + n % 28);
            item.study.study_date.clone_from(&date);
            item.study.attrs.put(Element::text(tags::STUDY_DATE, VR::DA, &date));
            batch.push(item);
        }
        if batch.len() >= 1_000 {
            commit(catalog, &batch, DuplicatePolicy::KeepFirst);
            batch.clear();
        }
    }
    commit(catalog, &batch, DuplicatePolicy::KeepFirst);
    catalog.refresh_statistics().expect("statistics");
}

/// Whether a plan reads a whole table (SQLite's `SCAN`, PostgreSQL's `Seq Scan`).
fn reads_a_whole_table(plan: &str) -> bool {
    plan.lines().any(|line| line.trim_start().starts_with("SCAN ") || line.contains("Seq Scan"))
}

on_every_engine! {
    /// The narrowings a registration clerk's and a radiologist's queries use
    /// (a name prefix, Latin or Korean; a date range; a patient's study by
    /// UID) run on indexes, never by reading whole tables: what keeps them
    /// fast however large the archive grows. (A wildcard inside a name is
    /// left out: at this size PostgreSQL rightly prefers reading the table
    /// to its trigram indexes.)
    fn every_common_narrowing_runs_on_an_index(catalog) {
        fill_for_plans(catalog, 5_000);
        let cases = [
            query("STUDY", &[(tags::PATIENT_NAME, VR::PN, "KIM^GIVEN0012*")]),
            query("STUDY", &[(tags::PATIENT_NAME, VR::PN, "김^이름0012*")]),
            query("STUDY", &[(tags::STUDY_DATE, VR::DA, "20230301-20230305")]),
            query("SERIES", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.42")]),
            query("IMAGE", &[(tags::PATIENT_ID, VR::LO, "P00042"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.42")]),
        ];
        for (case, query) in cases.iter().enumerate() {
            let plan = catalog.query_plan(query).expect("plan");
            assert!(!reads_a_whole_table(&plan), "case {case}:\n{plan}");
        }
        // The check sees a whole-table read where one happens: nothing narrows on a description.
        let unnarrowed = catalog.query_plan(&query("STUDY", &[(tags::STUDY_DESCRIPTION, VR::LO, "CT*")])).expect("plan");
        assert!(reads_a_whole_table(&unnarrowed), "{unnarrowed}");
    }
}

on_every_engine! {
    /// A merge link (patient-level Patient ID and issuer registers) files
    /// studies that arrive for the merged record under the record it was
    /// merged into, follows links in turn, moves what the merged record still
    /// holds when the link arrives, leaves a study whose character set
    /// cannot carry that record where it is, and ends when it names the
    /// record itself; links that go round are not followed.
    fn a_merge_link_files_studies_under_the_record_merged_into(catalog) {
        commit(catalog, &[
            instance(&spec("P1", "Hong^Gildong", "1.1", "1.1.1", "CT", "1.1.1.1"), 1),
            instance(&spec("P2", "Kim^Minsu", "2.1", "2.1.1", "MR", "2.1.1.1"), 2),
        ], DuplicatePolicy::KeepFirst);
        let event = Event::new(CORRECTED, &Origin::default());
        let link = |from: &str, into: &str, hlc: i64| {
            [
                register(CorrectionLevel::Patient, &format!("{from}\\"), tags::PATIENT_ID, "LO", into, hlc, "SITEA"),
                register(CorrectionLevel::Patient, &format!("{from}\\"), tags::ISSUER_OF_PATIENT_ID, "LO", "", hlc, "SITEA"),
            ]
        };
        let studies_of = |id: &str| {
            let mut uids: Vec<String> = catalog.studies_of_patient(&format!("{id}\\")).expect("reads").into_iter().map(|(uid, _)| uid).collect();
            uids.sort();
            uids
        };
        let arrives = |patient: &str, study: &str, digest: u8, charset: Option<&str>| {
            let mut item = instance(&spec(patient, "Hong^Gildong", study, &format!("{study}.1"), "CT", &format!("{study}.1.1")), digest);
            if let Some(charset) = charset {
                item.instance.attrs.put(Element::text(tags::SPECIFIC_CHARACTER_SET, VR::CS, charset));
            }
            commit(catalog, &[item], DuplicatePolicy::KeepFirst);
        };

        // The merge: its study moved, then the link; the merged record is gone.
        let mut moved = vec![
            register(CorrectionLevel::Study, "1.1", tags::PATIENT_ID, "LO", "P2", 10 << 16, "SITEA"),
            register(CorrectionLevel::Study, "1.1", tags::ISSUER_OF_PATIENT_ID, "LO", "", 10 << 16, "SITEA"),
        ];
        moved.extend(link("P1", "P2", 11 << 16));
        assert_eq!(catalog.correct(&moved, &event).expect("correct").len(), 4);
        assert_eq!(catalog.merge_link("P1\\").expect("reads").as_deref(), Some("P2\\"));
        assert_eq!(studies_of("P2"), ["1.1", "2.1"]);
        assert!(catalog.study_corrections("2.1").expect("reads").registers.is_empty(), "the link is not P2's");

        // A study arriving for P1 is filed under P2, by registers every node makes alike.
        arrives("P1", "3.1", 3, None);
        assert_eq!(studies_of("P2"), ["1.1", "2.1", "3.1"]);
        assert!(studies_of("P1").is_empty(), "no record is made for the merged patient");
        let followed = catalog.study_corrections("3.1").expect("reads");
        let registers: Vec<(&str, i64)> = followed.registers.iter().map(|r| (r.value.as_str(), r.hlc)).collect();
        let below_any_person = (11 << 16) - MERGE_LINK_CLOCK_OFFSET;
        assert_eq!(registers, [("P2", below_any_person), ("", below_any_person)]);
        assert!(followed.registers.iter().all(|r| r.made_by_merge_link() && r.at_ms() == 11));
        assert!(catalog.instances_by_sop_uid(&["3.1.1.1".into()]).expect("reads")[0].corrected);
        let events = catalog.events_after(0, 100).expect("events");
        assert!(events.iter().any(|e| e.kind == CORRECTED && e.study_uid.as_deref() == Some("3.1")), "journaled for the peers");
        // Its later instances join it without a note.
        let mut later = instance(&spec("P1", "Hong^Gildong", "3.1", "3.1.1", "CT", "3.1.1.2"), 4);
        later.instance.attrs = Dataset::new();
        commit(catalog, &[later], DuplicatePolicy::KeepFirst);
        assert!(!catalog.events_after(0, 100).expect("events").iter().any(|e| e.kind == "patient-mismatch"));

        // A person's move wins over the link's, even one made before it (a peer's, arriving late).
        let move_to = |study: &str, id: &str, hlc: i64| {
            [
                register(CorrectionLevel::Study, study, tags::PATIENT_ID, "LO", id, hlc, "SITEB"),
                register(CorrectionLevel::Study, study, tags::ISSUER_OF_PATIENT_ID, "LO", "", hlc, "SITEB"),
            ]
        };
        catalog.correct(&move_to("3.1", "P7", 5 << 16), &event).expect("correct");
        assert_eq!(studies_of("P7"), ["3.1"]);
        // And a study whose move arrived before it goes where the move says, not along the link.
        catalog.correct(&move_to("3.2", "P7", 6 << 16), &event).expect("correct");
        arrives("P1", "3.2", 8, None);
        assert_eq!(studies_of("P7"), ["3.1", "3.2"]);
        // A study a link filed under P2 before P2 was merged in turn.
        arrives("P1", "3.3", 9, None);
        assert!(studies_of("P2").contains(&"3.3".to_string()));

        // P2 merged in turn into P3 at another site, not held here, named by its register: the studies moved
        // there by that merge and what P2 holds as its files say follow; so will P1's.
        let mut merged_again = vec![register(CorrectionLevel::Patient, "P3\\", tags::PATIENT_NAME, "PN", "Park^Jiho", 20 << 16, "SITEB")];
        merged_again.extend(move_to("1.1", "P3", 20 << 16));
        merged_again.extend(link("P2", "P3", 20 << 16));
        catalog.correct(&merged_again, &event).expect("correct");
        assert_eq!(studies_of("P3"), ["1.1", "2.1", "3.3"], "the one a link filed follows the later link");
        assert!(studies_of("P2").is_empty());
        assert_eq!(catalog.merged_into("P1\\").expect("reads").as_deref(), Some("P3\\"));
        arrives("P1", "4.1", 5, Some("ISO_IR 100"));
        assert_eq!(studies_of("P3"), ["1.1", "2.1", "3.3", "4.1"]);

        // P3 renamed in Hangul: a Latin-1 study for P1 cannot carry it and stays under P1, noted; a UTF-8 one follows.
        let hangul = register(CorrectionLevel::Patient, "P3\\", tags::PATIENT_NAME, "PN", "박^지호", 21 << 16, "SITEB");
        catalog.correct(&[hangul], &event).expect("correct");
        arrives("P1", "5.1", 6, Some("ISO_IR 100"));
        arrives("P1", "6.1", 7, Some("ISO_IR 192"));
        assert_eq!(studies_of("P1"), ["5.1"]);
        assert!(studies_of("P3").contains(&"6.1".to_string()));
        let events = catalog.events_after(0, 100).expect("events");
        assert!(events.iter().any(|e| e.kind == "merge-not-followed" && e.study_uid.as_deref() == Some("5.1")));
        let corrected = |sop: &str| catalog.instances_by_sop_uid(&[sop.into()]).expect("reads")[0].corrected;
        assert!(!corrected("5.1.1.1"), "its patient's link changes nothing in its copies");
        // An image naming P1, which is held, for a study a person moved elsewhere: noted.
        let mut stray = instance(&spec("P1", "Hong^Gildong", "3.1", "3.1.1", "CT", "3.1.1.3"), 10);
        stray.instance.attrs = Dataset::new();
        commit(catalog, &[stray], DuplicatePolicy::KeepFirst);
        let events = catalog.events_after(0, 200).expect("events");
        assert!(events.iter().any(|e| e.kind == "patient-mismatch" && e.sop_uid.as_deref() == Some("3.1.1.3")));

        // Links that go round (each record merged into the other at two sites) are not followed.
        catalog.correct(&link("P3", "P1", 30 << 16), &event).expect("correct");
        assert_eq!(catalog.merged_into("P1\\").expect("reads"), None);
        assert_eq!(studies_of("P3").len(), 5, "nothing moved round");
        // A link naming its own record ends it.
        catalog.correct(&link("P3", "P3", 31 << 16), &event).expect("correct");
        assert_eq!(catalog.merge_link("P3\\").expect("reads"), None);
        assert_eq!(catalog.merged_into("P1\\").expect("reads").as_deref(), Some("P3\\"));
        // An older link does not replace a later one.
        catalog.correct(&link("P1", "P9", 5 << 16), &event).expect("correct");
        assert_eq!(catalog.merge_link("P1\\").expect("reads").as_deref(), Some("P2\\"));

        // Two nodes that knew different links can make move pairs with one clock and origin: the pair naming
        // the greater identity wins whole, never the ID of one and the issuer of the other.
        arrives("P8", "7.1", 11, None);
        let pair = |id: &str, issuer: &str| {
            [
                register(CorrectionLevel::Study, "7.1", tags::PATIENT_ID, "LO", id, -5, "SITEC"),
                register(CorrectionLevel::Study, "7.1", tags::ISSUER_OF_PATIENT_ID, "LO", issuer, -5, "SITEC"),
            ]
        };
        catalog.correct(&pair("PA", "H2"), &event).expect("correct");
        catalog.correct(&pair("PB", "H1"), &event).expect("correct");
        assert_eq!(catalog.studies_of_patient("PB\\H1").expect("reads").len(), 1);
        assert!(catalog.correct(&pair("PA", "H3"), &event).expect("correct").is_empty(), "loses whole");
        assert_eq!(catalog.studies_of_patient("PB\\H1").expect("reads").len(), 1);
    }
}
