//! Lockout after repeated failed sign-ins, per account and per address.
//!
//! `max_failures` consecutive failures for one account lock it for
//! `period`; an address gets four times as many (one client trying many
//! names). A failure older than `period` no longer counts. Success clears the
//! account's and the address's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most accounts and addresses remembered; beyond it the stalest go.
const MAX_ENTRIES: usize = 50_000;
const ADDRESS_FACTOR: u32 = 4;

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

pub(crate) struct Lockout {
    max_failures: u32,
    period: Duration,
    by_user: Mutex<HashMap<String, Failures>>,
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

fn remaining<K: std::hash::Hash + Eq>(
    table: &Mutex<HashMap<K, Failures>>,
    key: &K,
    limit: u32,
    period: Duration,
    now: Instant,
) -> Option<Duration> {
    let table = table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let failures = table.get(key)?;
    let until = failures.last + period;
    (failures.count >= limit && until > now).then(|| until - now)
}

fn count<K: std::hash::Hash + Eq + Clone>(
    table: &Mutex<HashMap<K, Failures>>,
    key: &K,
    period: Duration,
    now: Instant,
) {
    let mut table = table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if table.len() >= MAX_ENTRIES {
        table.retain(|_, failures| now.duration_since(failures.last) < period);
    }
    if table.len() >= MAX_ENTRIES {
        if let Some(stalest) = table.iter().min_by_key(|(_, failures)| failures.last).map(|(key, _)| key.clone()) {
            table.remove(&stalest);
        }
    }
    let failures = table.entry(key.clone()).or_insert(Failures { count: 0, last: now });
    if now.duration_since(failures.last) >= period {
        failures.count = 0;
    }
    failures.count = failures.count.saturating_add(1);
    failures.last = now;
}

impl Lockout {
    pub fn new(max_failures: u32, period: Duration) -> Lockout {
        Lockout { max_failures, period, by_user: Mutex::default(), by_address: Mutex::default() }
    }

    fn enabled(&self) -> bool {
        self.max_failures > 0 && !self.period.is_zero()
    }

    /// How long `user` (from `address`) must still wait, if locked out.
    pub fn locked_for(&self, user: &str, address: Option<IpAddr>) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let by_user = remaining(&self.by_user, &user.to_lowercase(), self.max_failures, self.period, now);
        let by_address = address.and_then(|address| {
            remaining(&self.by_address, &address, self.max_failures * ADDRESS_FACTOR, self.period, now)
        });
        by_user.max(by_address)
    }

    pub fn failed(&self, user: &str, address: Option<IpAddr>) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        count(&self.by_user, &user.to_lowercase(), self.period, now);
        if let Some(address) = address {
            count(&self.by_address, &address, self.period, now);
        }
    }

    pub fn succeeded(&self, user: &str, address: Option<IpAddr>) {
        self.by_user.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&user.to_lowercase());
        if let Some(address) = address {
            self.by_address.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)));
    const OTHER_HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8)));

    #[test]
    fn an_account_locks_after_the_limit_and_success_clears_it() {
        let lockout = Lockout::new(3, Duration::from_secs(900));
        for _ in 0..2 {
            lockout.failed("Kim", HOST);
            assert_eq!(lockout.locked_for("kim", HOST), None);
        }
        lockout.failed("kim", HOST);
        let wait = lockout.locked_for("KIM", OTHER_HOST).expect("locked from any address");
        assert!(wait > Duration::from_secs(890) && wait <= Duration::from_secs(900), "{wait:?}");
        assert_eq!(lockout.locked_for("lee", OTHER_HOST), None, "other accounts are not affected");
        lockout.succeeded("kim", HOST);
        assert_eq!(lockout.locked_for("kim", HOST), None);
    }

    #[test]
    fn an_address_trying_many_names_locks_itself_out() {
        let lockout = Lockout::new(2, Duration::from_secs(900));
        for index in 0..8 {
            assert_eq!(lockout.locked_for(&format!("user{index}"), HOST), None, "attempt {index}");
            lockout.failed(&format!("user{index}"), HOST);
        }
        assert!(lockout.locked_for("someone-else", HOST).is_some());
        assert_eq!(lockout.locked_for("someone-else", OTHER_HOST), None);
    }

    #[test]
    fn old_failures_do_not_count_and_zero_disables() {
        let lockout = Lockout::new(1, Duration::ZERO);
        lockout.failed("kim", HOST);
        assert_eq!(lockout.locked_for("kim", HOST), None);
        let lockout = Lockout::new(0, Duration::from_secs(60));
        lockout.failed("kim", HOST);
        assert_eq!(lockout.locked_for("kim", HOST), None);
    }
}
