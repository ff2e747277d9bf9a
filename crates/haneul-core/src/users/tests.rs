use std::time::Duration;

use super::*;

fn users() -> (tempfile::TempDir, Users) {
    let dir = tempfile::tempdir().unwrap();
    let users = Users::open(dir.path(), &crate::CatalogLocation::Embedded).unwrap();
    (dir, users)
}

fn new_user(name: &str, role: Role, password: &str) -> NewUser {
    NewUser { name: name.into(), role, password: password.into(), sites: Vec::new(), must_change_password: false }
}

fn failure<T: std::fmt::Debug>(result: Result<T>) -> AuthFailure {
    match result {
        Err(UsersError::Unauthenticated(reason)) => reason,
        other => panic!("expected refused credentials, got {other:?}"),
    }
}

#[test]
fn password_hashes_are_argon2id_with_our_parameters_and_salted() {
    let first = hash_password("correct horse battery").unwrap();
    let second = hash_password("correct horse battery").unwrap();
    assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
    assert_ne!(first, second, "each hash has its own salt");
    assert!(password_matches(&first, "correct horse battery"));
    assert!(!password_matches(&first, "correct horse battery "));
    assert!(!password_matches("not a phc string", "anything"));
    assert!(dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
}

#[test]
fn generated_passwords_are_long_random_and_unambiguous() {
    let a = generate_password();
    let b = generate_password();
    assert_eq!(a.len(), 20);
    assert_ne!(a, b);
    assert!(a.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
    assert!(check_password(&a).is_ok());
}

#[test]
fn users_are_stored_hashed_and_verified() {
    let (dir, users) = users();
    let mut new = new_user("kim.minji", Role::Radiologist, "a long enough password");
    new.sites = vec!["seoul".into(), " busan ".into(), "seoul".into()];
    let created = users.create_user(&new).unwrap();
    assert_eq!(created.role, Role::Radiologist);
    assert_eq!(created.sites, vec!["seoul".to_string(), "busan".to_string()]);
    assert!(!created.disabled && !created.must_change_password);

    let verified = users.verify_password("kim.minji", "a long enough password").unwrap();
    assert_eq!(verified, created);
    // Names are compared without regard to case.
    assert_eq!(users.verify_password("Kim.Minji", "a long enough password").unwrap().name, "kim.minji");
    assert_eq!(failure(users.verify_password("kim.minji", "a wrong password!!")), AuthFailure::WrongPassword);
    assert_eq!(failure(users.verify_password("nobody", "a long enough password")), AuthFailure::UnknownUser);
    assert_eq!(UsersError::Unauthenticated(AuthFailure::UnknownUser).to_string(), "invalid credentials");

    // The database holds no password, only its Argon2id hash.
    let bytes = std::fs::read(dir.path().join(crate::CATALOG_FILE)).unwrap();
    let wal = std::fs::read(dir.path().join(format!("{}-wal", crate::CATALOG_FILE))).unwrap_or_default();
    for file in [bytes, wal] {
        assert!(!file.windows(22).any(|w| w == b"a long enough password"));
    }
}

#[test]
fn bad_names_passwords_and_duplicates_are_refused() {
    let (_dir, users) = users();
    users.create_user(&new_user("lee", Role::Clinician, "twelve chars")).unwrap();
    let duplicate = users.create_user(&new_user("LEE", Role::Admin, "another password")).unwrap_err();
    assert_eq!(duplicate.to_string(), "user \"LEE\" already exists");
    let short = users.create_user(&new_user("park", Role::Clinician, "short")).unwrap_err();
    assert_eq!(short.to_string(), "password is too short: use at least 12 characters");
    for bad in ["", "-lead", "a b", "홍길동", &"x".repeat(65)] {
        let error = users.create_user(&new_user(bad, Role::Clinician, "twelve chars")).unwrap_err();
        assert!(error.to_string().starts_with("invalid user name"), "{bad:?}: {error}");
    }
}

#[test]
fn disabled_users_never_verify_and_can_be_enabled_again() {
    let (_dir, users) = users();
    users.create_user(&new_user("choi", Role::Technologist, "technologist pw")).unwrap();
    users.set_disabled("choi", true).unwrap();
    assert!(users.user("choi").unwrap().unwrap().disabled);
    assert_eq!(failure(users.verify_password("choi", "technologist pw")), AuthFailure::Disabled);
    users.set_disabled("choi", false).unwrap();
    assert!(users.verify_password("choi", "technologist pw").is_ok());
    assert_eq!(users.set_disabled("nobody", true).unwrap_err().to_string(), "unknown user \"nobody\"");
}

#[test]
fn passwords_change() {
    let (_dir, users) = users();
    users.create_user(&new_user("jung", Role::Clinician, "first password")).unwrap();
    users.change_password("jung", "second password", true).unwrap();
    assert_eq!(failure(users.verify_password("jung", "first password")), AuthFailure::WrongPassword);
    assert!(users.verify_password("jung", "second password").unwrap().must_change_password);

    assert_eq!(
        failure(users.change_own_password("jung", "first password", "third password")),
        AuthFailure::WrongPassword
    );
    users.change_own_password("jung", "second password", "third password").unwrap();
    let user = users.verify_password("jung", "third password").unwrap();
    assert!(!user.must_change_password);
    assert!(users.change_password("nobody", "some password", false).is_err());
}

#[test]
fn the_first_admin_is_created_once() {
    let (_dir, users) = users();
    let admin = users.ensure_initial_admin(None).unwrap().expect("created on an empty catalog");
    assert_eq!(admin.user.name, INITIAL_ADMIN);
    assert_eq!(admin.user.role, Role::Admin);
    assert!(admin.user.must_change_password);
    let password = admin.generated_password.expect("a generated password");
    assert!(users.verify_password("admin", &password).is_ok());
    assert!(users.ensure_initial_admin(None).unwrap().is_none());

    let (_dir, users) = users_with_one();
    assert!(users.ensure_initial_admin(Some("from the environment".into())).unwrap().is_none());

    let (_dir, users) = self::users();
    let admin = users.ensure_initial_admin(Some("from the environment".into())).unwrap().unwrap();
    assert!(admin.generated_password.is_none());
    assert!(users.verify_password("admin", "from the environment").is_ok());
    let (_dir, users) = self::users();
    assert!(users.ensure_initial_admin(Some("short".into())).is_err());
}

fn users_with_one() -> (tempfile::TempDir, Users) {
    let (dir, users) = users();
    users.create_user(&new_user("first", Role::Clinician, "first password")).unwrap();
    (dir, users)
}

#[test]
fn tokens_are_shown_once_stored_hashed_and_checked() {
    let (dir, users) = users_with_one();
    let created = users.create_token("first", "backup script", Some(Duration::from_secs(86_400))).unwrap();
    let secret = &created.secret;
    assert!(secret.starts_with(&format!("hnl_{}_", created.token.id)), "{secret}");
    assert_eq!(secret.len(), 4 + 16 + 1 + 43);
    assert_eq!(created.token.user, "first");
    assert_eq!(created.token.state_at(unix_ms_now()), TokenState::Active);

    let (user, token) = users.verify_token(secret).unwrap();
    assert_eq!((user.name.as_str(), token.id.as_str()), ("first", created.token.id.as_str()));

    // A changed secret, a malformed string and an unknown id all fail.
    let mut tampered = secret.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(failure(users.verify_token(std::str::from_utf8(&tampered).unwrap())), AuthFailure::WrongSecret);
    for malformed in ["", "hnl_", "Bearer x", &secret[..secret.len() - 1], &secret.replace("hnl_", "hnx_")] {
        assert_eq!(failure(users.verify_token(malformed)), AuthFailure::MalformedToken, "{malformed:?}");
    }
    let other_id = format!("hnl_{}{}", "0".repeat(16), &secret[20..]);
    assert_eq!(failure(users.verify_token(&other_id)), AuthFailure::UnknownToken);

    // Only the digest is stored.
    let stored = users.catalog.token(&created.token.id).unwrap().unwrap();
    let encoded = &secret[21..];
    let raw = URL_SAFE_NO_PAD.decode(encoded).unwrap();
    assert_eq!(stored.secret_hash, *blake3::hash(&raw).as_bytes());
    let bytes = std::fs::read(dir.path().join(format!("{}-wal", crate::CATALOG_FILE))).unwrap_or_default();
    assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()));

    // A disabled user's tokens stop working, and work again once enabled.
    users.set_disabled("first", true).unwrap();
    assert_eq!(failure(users.verify_token(secret)), AuthFailure::Disabled);
    users.set_disabled("first", false).unwrap();
    assert!(users.verify_token(secret).is_ok());

    // Revocation is final.
    users.revoke_token(&created.token.id).unwrap();
    users.revoke_token(&created.token.id).unwrap();
    assert_eq!(failure(users.verify_token(secret)), AuthFailure::RevokedToken);
    let listed = users.tokens().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state_at(unix_ms_now()), TokenState::Revoked);
    assert_eq!(users.revoke_token("feedfeedfeedfeed").unwrap_err().to_string(), "unknown token \"feedfeedfeedfeed\"");
}

#[test]
fn tokens_expire_and_need_a_known_user() {
    let (_dir, users) = users_with_one();
    let expired = users.create_token("first", "short lived", Some(Duration::ZERO)).unwrap();
    assert_eq!(failure(users.verify_token(&expired.secret)), AuthFailure::ExpiredToken);
    let forever = users.create_token("FIRST", "no expiry", None).unwrap();
    assert_eq!(forever.token.user, "first");
    assert_eq!(forever.token.expires_ms, None);
    assert!(users.verify_token(&forever.secret).is_ok());
    assert_eq!(users.create_token("nobody", "x", None).unwrap_err().to_string(), "unknown user \"nobody\"");
    assert!(users.create_token("first", "  ", None).is_err());
    assert_eq!(users.tokens().unwrap().len(), 2);
}

thread_local! {
    /// Argon2 verifications run by this test thread (counted by `password_matches`).
    pub(super) static VERIFICATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Argon2 verifications that `check` runs on this thread.
fn verifications(check: impl FnOnce()) -> usize {
    let before = VERIFICATIONS.with(std::cell::Cell::get);
    check();
    VERIFICATIONS.with(std::cell::Cell::get) - before
}

#[test]
fn unknown_and_disabled_users_cost_one_verification_like_a_wrong_password() {
    let (_dir, users) = users_with_one();
    let wrong = verifications(|| assert!(users.verify_password("first", "a wrong password").is_err()));
    let unknown = verifications(|| assert!(users.verify_password("nobody", "a wrong password").is_err()));
    users.set_disabled("first", true).expect("disabling");
    let disabled = verifications(|| assert!(users.verify_password("first", "a wrong password").is_err()));
    assert_eq!((wrong, unknown, disabled), (1, 1, 1));
    // The stand-in hash costs what a real one does: same algorithm and parameters.
    let stored = users.catalog.user("first").expect("catalog").expect("the user").password_hash;
    let params = |phc: &str| {
        let hash = PasswordHash::new(phc).expect("a PHC string");
        (hash.algorithm.to_string(), hash.version, hash.params.to_string())
    };
    assert_eq!(params(super::dummy_hash()), params(&stored));
}

#[test]
fn verified_tokens_are_cached_until_revoked_or_disabled_here() {
    let (_dir, users) = users_with_one();
    let created = users.create_token("first", "viewer", None).unwrap();
    assert!(users.cached_token(&created.secret).is_none(), "nothing is cached before a verification");
    users.verify_token(&created.secret).unwrap();
    let (user, token) = users.cached_token(&created.secret).expect("cached after verification");
    assert_eq!((user.name.as_str(), token.id.as_str()), ("first", created.token.id.as_str()));
    assert!(users.cached_token(&format!("{}x", created.secret)).is_none(), "only the exact token");

    users.revoke_token(&created.token.id).unwrap();
    assert!(users.cached_token(&created.secret).is_none(), "revocation empties the cache at once");
    assert_eq!(failure(users.verify_token(&created.secret)), AuthFailure::RevokedToken);

    let other = users.create_token("first", "script", None).unwrap();
    users.verify_token(&other.secret).unwrap();
    users.set_disabled("FIRST", true).unwrap();
    assert!(users.cached_token(&other.secret).is_none(), "a disabled account's tokens leave the cache");
}
