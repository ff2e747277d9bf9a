//! What the nodes of one catalog share: job leases and remote AEs, with the
//! same answers from SQLite and PostgreSQL.

use haneul_catalog::*;

#[macro_use]
mod engines;

fn ae(title: &str, port: u16) -> SharedAeRecord {
    SharedAeRecord {
        title: title.into(),
        host: "10.1.2.3".into(),
        port,
        role: "technologist".into(),
        site: "seoul".into(),
        description: "CT 3층".into(),
        updated_ms: 1_000,
        updated_by: "admin".into(),
    }
}

on_every_engine! {
    /// One node at a time holds a lease; it keeps it by renewing, and
    /// another node gets it once it lapses or is given up.
    fn a_lease_has_one_holder_until_it_lapses(catalog) {
        let holder = |node: &str, now_ms: i64| catalog.lease_acquire("replication.dr", node, now_ms, 10_000).expect("acquire").holder;
        assert_eq!(holder("a", 0), "a", "a free lease is taken");
        assert_eq!(holder("b", 5_000), "a", "held until 10 s");
        assert_eq!(holder("a", 8_000), "a", "renewed until 18 s");
        assert_eq!(holder("b", 15_000), "a", "the renewal holds");
        assert_eq!(holder("b", 18_001), "b", "a lapsed lease goes to the next node asking");
        assert_eq!(holder("a", 19_000), "b", "the old holder does not take it back while b renews");
        assert_eq!(holder("a", 5_000), "b", "nor with a clock behind");

        assert!(!catalog.lease_release("replication.dr", "a").expect("release"), "only the holder gives it up");
        assert_eq!(holder("c", 20_000), "b");
        assert!(catalog.lease_release("replication.dr", "b").expect("release"));
        assert_eq!(holder("c", 20_000), "c", "a lease given up is free at once");

        assert_eq!(catalog.lease_acquire("replication.other", "a", 20_000, 10_000).expect("acquire").holder, "a", "leases are apart");
        let leases = catalog.leases().expect("leases");
        let names: Vec<(&str, &str, i64)> =
            leases.iter().map(|lease| (lease.name.as_str(), lease.holder.as_str(), lease.expires_ms)).collect();
        assert_eq!(names, [("replication.dr", "c", 30_000), ("replication.other", "a", 30_000)]);
    }
}

on_every_engine! {
    fn shared_aes_are_added_replaced_listed_and_removed(catalog) {
        assert!(catalog.shared_aes().expect("list").is_empty());
        assert!(catalog.put_shared_ae(&ae("CT3", 104)).expect("add"), "new");
        assert!(catalog.put_shared_ae(&ae("MR1", 11112)).expect("add"));
        let mut moved = ae("CT3", 4242);
        moved.updated_by = "kim".into();
        assert!(!catalog.put_shared_ae(&moved).expect("replace"), "same title: replaced, not added");
        assert_eq!(catalog.shared_aes().expect("list"), [moved, ae("MR1", 11112)]);
        assert!(catalog.remove_shared_ae("MR1").expect("remove"));
        assert!(!catalog.remove_shared_ae("MR1").expect("remove again"), "gone already");
        assert_eq!(catalog.shared_aes().expect("list").len(), 1);
    }
}
