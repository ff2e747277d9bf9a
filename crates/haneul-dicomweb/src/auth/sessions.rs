//! Sign-in sessions of the web viewer, in memory.
//!
//! The cookie carries 32 random bytes; the table is keyed by their BLAKE3
//! digest, so the table alone never yields a usable cookie. A session ends at
//! logout, after `idle` without a request, or `lifetime` after sign-in,
//! whichever comes first. Sessions do not survive a restart: users sign in
//! again, which is the safe failure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use haneul_core::users::{Role, User};
use rand::RngCore;

/// Name of the session cookie.
pub const COOKIE: &str = "haneul_session";

/// Most sessions kept at once; beyond it the least recently used one goes.
const MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user: String,
    pub role: Role,
    pub sites: Vec<String>,
    pub must_change_password: bool,
    /// Sent back in `X-CSRF-Token` with every state-changing request.
    pub csrf_token: String,
    pub created: Instant,
    pub last_seen: Instant,
    /// When the account was last re-read (disabled or changed accounts).
    pub checked: Instant,
}

/// What a presented cookie turned out to be.
pub(crate) enum Lookup {
    Valid(Session),
    /// Ended by a timeout (now removed): `"idle timeout"` or `"session lifetime"`.
    Expired {
        user: String,
        reason: &'static str,
    },
    Unknown,
}

pub(crate) struct Sessions {
    idle: Duration,
    lifetime: Duration,
    table: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

fn key(cookie: &str) -> [u8; 32] {
    *blake3::hash(cookie.as_bytes()).as_bytes()
}

impl Sessions {
    pub fn new(idle: Duration, lifetime: Duration) -> Sessions {
        Sessions { idle, lifetime, table: Mutex::new(HashMap::new()) }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new session for `user`: returns the cookie value and the session.
    pub fn create(&self, user: &User) -> (String, Session) {
        let now = Instant::now();
        let cookie = random_text(32);
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            sites: user.sites.clone(),
            must_change_password: user.must_change_password,
            csrf_token: random_text(24),
            created: now,
            last_seen: now,
            checked: now,
        };
        let mut table = self.table();
        table.retain(|_, existing| self.expiry(existing, now).is_none());
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table.iter().min_by_key(|(_, existing)| existing.last_seen).map(|(key, _)| *key) {
                table.remove(&oldest);
            }
        }
        table.insert(key(&cookie), session.clone());
        (cookie, session)
    }

    fn expiry(&self, session: &Session, now: Instant) -> Option<&'static str> {
        if now.duration_since(session.created) >= self.lifetime {
            Some("session lifetime")
        } else if now.duration_since(session.last_seen) >= self.idle {
            Some("idle timeout")
        } else {
            None
        }
    }

    /// The session of a cookie, marked as used now.
    pub fn lookup(&self, cookie: &str) -> Lookup {
        let now = Instant::now();
        let mut table = self.table();
        let key = key(cookie);
        let Some(session) = table.get_mut(&key) else {
            return Lookup::Unknown;
        };
        if let Some(reason) = self.expiry(session, now) {
            let user = session.user.clone();
            table.remove(&key);
            return Lookup::Expired { user, reason };
        }
        session.last_seen = now;
        Lookup::Valid(session.clone())
    }

    /// After re-reading the account: new role, sites and password state.
    pub fn refresh(&self, cookie: &str, user: &User) {
        if let Some(session) = self.table().get_mut(&key(cookie)) {
            session.role = user.role;
            session.sites = user.sites.clone();
            session.must_change_password = user.must_change_password;
            session.checked = Instant::now();
        }
    }

    /// End a session; returns it if it existed.
    pub fn remove(&self, cookie: &str) -> Option<Session> {
        self.table().remove(&key(cookie))
    }

    /// End every session of a user (disabled account).
    pub fn remove_user(&self, user: &str) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|_, session| !session.user.eq_ignore_ascii_case(user));
        before - table.len()
    }
}

/// The value of our cookie in a `Cookie` header, if any.
pub(crate) fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "kim".into(),
            role: Role::Clinician,
            disabled: false,
            must_change_password: false,
            sites: vec![],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (cookie, created) = sessions.create(&user());
        assert!(matches!(sessions.lookup(&cookie), Lookup::Valid(found) if found.csrf_token == created.csrf_token));
        assert!(matches!(sessions.lookup("not-a-session"), Lookup::Unknown));
        let (other, _) = sessions.create(&user());
        assert_ne!(cookie, other);
        assert!(sessions.remove(&cookie).is_some());
        assert!(matches!(sessions.lookup(&cookie), Lookup::Unknown));
        assert!(matches!(sessions.lookup(&other), Lookup::Valid(_)));
        assert_eq!(sessions.remove_user("KIM"), 1);
        assert!(matches!(sessions.lookup(&other), Lookup::Unknown));
    }

    #[test]
    fn idle_and_absolute_timeouts_end_a_session() {
        let sessions = Sessions::new(Duration::ZERO, Duration::from_secs(600));
        let (cookie, _) = sessions.create(&user());
        assert!(matches!(sessions.lookup(&cookie), Lookup::Expired { reason: "idle timeout", .. }));
        assert!(matches!(sessions.lookup(&cookie), Lookup::Unknown), "an expired session is gone");
        let sessions = Sessions::new(Duration::from_secs(600), Duration::ZERO);
        let (cookie, _) = sessions.create(&user());
        assert!(matches!(sessions.lookup(&cookie), Lookup::Expired { reason: "session lifetime", .. }));
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "theme=dark; haneul_session=abc ; x=1".parse().unwrap());
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
        headers.insert(axum::http::header::COOKIE, "haneul_session_x=abc".parse().unwrap());
        assert_eq!(cookie_value(&headers), None);
    }
}
