//! Accounts and API tokens in the SQLite catalog, and the upgrade of a
//! version-1 catalog (no account tables) in place.

use haneul_catalog::*;

#[macro_use]
mod engines;

fn new_user<'a>(name: &'a str, role: &'a str, sites: &'a [String]) -> NewUserRecord<'a> {
    NewUserRecord {
        name,
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        must_change_password: false,
        sites,
    }
}

on_every_engine! {
    fn users_are_unique_without_regard_to_case(catalog) {
        let sites = vec!["seoul".to_string()];
        let created = catalog.create_user(&new_user("Kim", "clinician", &sites)).unwrap();
        assert_eq!((created.name.as_str(), created.sites.as_slice()), ("Kim", sites.as_slice()));
        assert_eq!(created.created_ms, created.updated_ms);
        match catalog.create_user(&new_user("kim", "admin", &[])) {
            Err(CatalogError::Duplicate(what)) => assert_eq!(what, "user \"kim\""),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(catalog.user("KIM").unwrap().unwrap().pk, created.pk);
        assert!(catalog.user("lee").unwrap().is_none());

        assert!(catalog.update_user("kim", UserChange::Disabled(true)).unwrap());
        assert!(catalog.update_user("kim", UserChange::Password { hash: "$argon2id$new", must_change: true }).unwrap());
        let changed = catalog.user("Kim").unwrap().unwrap();
        assert!(changed.disabled && changed.must_change_password);
        assert_eq!(changed.password_hash, "$argon2id$new");
        assert!(!catalog.update_user("lee", UserChange::Disabled(true)).unwrap());

        catalog.create_user(&new_user("admin", "admin", &[])).unwrap();
        let names: Vec<String> = catalog.users().unwrap().into_iter().map(|user| user.name).collect();
        assert_eq!(names, ["admin", "Kim"]);
    }
}

on_every_engine! {
    fn the_first_user_is_created_only_on_an_empty_catalog(catalog) {
        assert!(catalog.create_first_user(&new_user("admin", "admin", &[])).unwrap().is_some());
        assert!(catalog.create_first_user(&new_user("other", "admin", &[])).unwrap().is_none());
        assert_eq!(catalog.users().unwrap().len(), 1);
    }
}

on_every_engine! {
    fn tokens_belong_to_users_and_revocation_keeps_its_time(catalog) {
        catalog.create_user(&new_user("svc", "service", &[])).unwrap();
        let token = TokenRecord {
            id: "00112233aabbccdd".into(),
            user: "SVC".into(),
            name: "router".into(),
            secret_hash: [7; 32],
            created_ms: 1_000,
            expires_ms: Some(2_000),
            revoked_ms: None,
        };
        assert!(catalog.create_token(&token).unwrap());
        assert!(!catalog.create_token(&TokenRecord { id: "ffff".into(), user: "nobody".into(), ..token.clone() }).unwrap());
        assert!(matches!(catalog.create_token(&token), Err(CatalogError::Duplicate(_))));

        let stored = catalog.token("00112233aabbccdd").unwrap().unwrap();
        assert_eq!(stored, TokenRecord { user: "svc".into(), ..token.clone() });
        assert!(catalog.revoke_token("00112233aabbccdd", 5_000).unwrap());
        assert!(catalog.revoke_token("00112233aabbccdd", 9_000).unwrap());
        assert_eq!(catalog.token("00112233aabbccdd").unwrap().unwrap().revoked_ms, Some(5_000));
        assert!(!catalog.revoke_token("0000000000000000", 5_000).unwrap());
        assert_eq!(catalog.tokens().unwrap().len(), 1);
    }
}

#[test]
fn a_version_1_catalog_gains_the_account_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL); PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let catalog = SqliteCatalog::open(&path).unwrap();
    assert!(catalog.users().unwrap().is_empty());
    catalog.create_user(&new_user("admin", "admin", &[])).unwrap();
    drop(catalog);
    let reopened = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = reopened.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, 9, "brought to the current schema");
}
