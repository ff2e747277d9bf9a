//! Migration state (plan, claim, update, list, reset, discrepancies) on
//! every engine: the same answers from SQLite and PostgreSQL.

use haneul_catalog::*;

#[macro_use]
mod engines;

fn planned(uid: &str, date: &str) -> PlannedStudy {
    PlannedStudy {
        study_uid: uid.into(),
        patient_id: format!("P-{uid}"),
        patient_name: "홍^길동".into(),
        study_date: date.into(),
        expected_instances: Some(2),
    }
}

/// A lone node at `now_ms`, whose claims hold a minute.
fn at(now_ms: i64) -> Claimant<'static> {
    Claimant { node: "", now_ms, abandoned_before_ms: now_ms - 60_000 }
}

fn uids(studies: &[MigrationStudy]) -> Vec<&str> {
    studies.iter().map(|study| study.study_uid.as_str()).collect()
}

on_every_engine! {
    fn a_migration_plan_is_claimed_updated_listed_and_reset(catalog) {
        let plan = [planned("1.1", "20240101"), planned("1.2", "20240301"), planned("1.3", "20240201")];
        assert_eq!(catalog.migration_plan("old", &plan).expect("plan"), 3);
        assert_eq!(catalog.migration_plan("old", &plan[..1]).expect("plan again"), 0, "listed studies stay");
        assert_eq!(catalog.migration_plan("other", &plan[..1]).expect("another source"), 1);

        let claimed = catalog.migration_claim("old", 2, &at(1_000), 3).expect("claim");
        assert_eq!(uids(&claimed), ["1.2", "1.3"], "newest first");
        assert!(claimed.iter().all(|study| study.state == MigrationState::Running && study.attempts == 1));

        let done = MigrationUpdate { state: Some(MigrationState::Done), migrated_instances: Some(2), ..Default::default() };
        catalog.migration_update("old", "1.2", &done).expect("update");
        let discrepancy = Discrepancy {
            study_uid: "1.3".into(),
            sop_uid: "1.3.9".into(),
            kind: "missing-here".into(),
            detail: "not received".into(),
        };
        let failed = MigrationUpdate {
            state: Some(MigrationState::Failed),
            detail: Some("association refused".into()),
            next_attempt_ms: Some(5_000),
            discrepancies: Some(vec![discrepancy.clone()]),
            ..Default::default()
        };
        catalog.migration_update("old", "1.3", &failed).expect("update");

        // Every study, in UID order, after a cursor, and by state.
        let all = catalog.migration_studies("old", None, "", 10).expect("all");
        assert_eq!(uids(&all), ["1.1", "1.2", "1.3"]);
        assert_eq!(uids(&catalog.migration_studies("old", None, "1.1", 1).expect("page")), ["1.2"]);
        let unbounded = catalog.migration_studies("old", None, "", usize::MAX).expect("no limit");
        assert_eq!(unbounded.len(), 3, "usize::MAX means no limit on every engine");
        let open = catalog
            .migration_studies("old", Some(&[MigrationState::Pending, MigrationState::Failed]), "", 10)
            .expect("by state");
        assert_eq!(uids(&open), ["1.1", "1.3"]);
        assert_eq!(open[1].detail, "association refused");
        assert_eq!(catalog.migration_discrepancies("old").expect("discrepancies"), [discrepancy]);

        let counts = catalog.migration_counts("old").expect("counts");
        assert_eq!((counts.total, counts.pending, counts.done, counts.failed), (3, 1, 1, 1));
        assert_eq!((counts.expected_instances, counts.migrated_instances), (6, 2));

        // A failed study is claimed again only once its retry time has come.
        assert_eq!(uids(&catalog.migration_claim("old", 5, &at(4_999), 3).expect("claim")), ["1.1"]);
        assert_eq!(uids(&catalog.migration_claim("old", 5, &at(5_000), 3).expect("claim")), ["1.3"]);
        assert_eq!(catalog.migration_release("old", "").expect("release"), 2, "a new run takes its studies back");
        assert_eq!(
            catalog.migration_reset("old", &[MigrationState::Pending], MigrationState::Running).expect("reset"),
            2
        );
        assert_eq!(
            catalog.migration_reset("old", &[MigrationState::Running], MigrationState::Pending).expect("reset"),
            2
        );
        assert_eq!(catalog.migration_counts("old").expect("counts").pending, 2);
        assert_eq!(catalog.migration_counts("other").expect("counts").pending, 1, "sources are apart");
    }
}

on_every_engine! {
    /// Nodes on one catalog: a node's running studies stay its own while it
    /// renews its claims, and go to another node once it stops (it died).
    fn the_studies_of_a_node_that_stops_renewing_are_taken_over(catalog) {
        let lease = 10_000;
        let claim = |node: &'static str, now_ms: i64, limit: usize| {
            let claimant = Claimant { node, now_ms, abandoned_before_ms: now_ms - lease };
            uids(&catalog.migration_claim("old", limit, &claimant, 5).expect("claim")).join(" ")
        };
        let plan: Vec<PlannedStudy> = (1..=4).map(|n| planned(&format!("1.{n}"), &format!("2024010{n}"))).collect();
        catalog.migration_plan("old", &plan).expect("plan");
        assert_eq!(claim("a", 0, 2), "1.4 1.3");
        assert_eq!(claim("b", 1_000, 5), "1.2 1.1", "a's studies are a's while its claims hold");
        assert_eq!(catalog.migration_renew("old", "a", 8_000).expect("renew"), 2);
        assert_eq!(catalog.migration_renew("old", "b", 8_000).expect("renew"), 2);
        assert_eq!(claim("b", 15_000, 5), "", "renewed at 8 s: held until 18 s");
        assert_eq!(catalog.migration_renew("old", "b", 15_000).expect("renew"), 2);
        // a stops renewing (it died); b's next claim after the lease takes its studies.
        assert_eq!(claim("b", 18_001, 5), "1.4 1.3");
        let running = catalog.migration_studies("old", Some(&[MigrationState::Running]), "", 10).expect("running");
        assert_eq!(running.len(), 4);
        assert!(running.iter().all(|study| study.updated_ms >= 15_000));
        let taken_over = running.iter().find(|study| study.study_uid == "1.4").expect("1.4");
        assert_eq!(taken_over.attempts, 2, "the dead node's try counts");
        // a comes back: a new run of a releases only what is still a's (nothing).
        assert_eq!(catalog.migration_release("old", "a").expect("release"), 0);
        assert_eq!(catalog.migration_release("old", "b").expect("release"), 4);
    }
}
