//! Associations open at once per calling AE title and per peer address, so
//! that one misbehaving modality or host cannot take every slot of
//! `max_associations` from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which limit an association request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// `max_associations_per_ae`
    CallingAe,
    /// `max_associations_per_ip`
    PeerAddress,
}

#[derive(Debug, Default)]
struct Open {
    by_ae: HashMap<String, usize>,
    by_ip: HashMap<IpAddr, usize>,
}

/// The counts of open associations; 0 as a limit means none.
#[derive(Debug)]
pub(crate) struct AssociationLimits {
    per_ae: usize,
    per_ip: usize,
    open: Mutex<Open>,
}

impl AssociationLimits {
    pub(crate) fn new(per_ae: usize, per_ip: usize) -> Arc<AssociationLimits> {
        Arc::new(AssociationLimits { per_ae, per_ip, open: Mutex::new(Open::default()) })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked: every change
        // is a single increment or decrement.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Count one more association of `ae` from `ip`, unless that would pass
    /// a limit. The returned guard gives the place back when dropped.
    pub(crate) fn enter(self: &Arc<Self>, ae: &str, ip: IpAddr) -> Result<Occupied, Exceeded> {
        let mut open = self.open();
        let by_ae = open.by_ae.get(ae).copied().unwrap_or(0);
        if self.per_ae > 0 && by_ae >= self.per_ae {
            return Err(Exceeded::CallingAe);
        }
        let by_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        if self.per_ip > 0 && by_ip >= self.per_ip {
            return Err(Exceeded::PeerAddress);
        }
        *open.by_ae.entry(ae.to_string()).or_insert(0) += 1;
        *open.by_ip.entry(ip).or_insert(0) += 1;
        Ok(Occupied { limits: Arc::clone(self), ae: ae.to_string(), ip })
    }

    #[cfg(test)]
    fn counts(&self, ae: &str, ip: IpAddr) -> (usize, usize) {
        let open = self.open();
        (open.by_ae.get(ae).copied().unwrap_or(0), open.by_ip.get(&ip).copied().unwrap_or(0))
    }
}

/// One counted association; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct Occupied {
    limits: Arc<AssociationLimits>,
    ae: String,
    ip: IpAddr,
}

impl Drop for Occupied {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        // Entries at zero are removed so the maps hold only open associations
        // (calling AE titles are chosen by peers: no unbounded growth).
        if let Some(count) = open.by_ae.get_mut(&self.ae) {
            *count -= 1;
            if *count == 0 {
                open.by_ae.remove(&self.ae);
            }
        }
        if let Some(count) = open.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const OTHER_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));

    #[test]
    fn each_calling_ae_and_each_address_has_its_own_limit() {
        let limits = AssociationLimits::new(2, 3);
        let first = limits.enter("CT1", HOST).expect("first");
        let second = limits.enter("CT1", HOST).expect("second");
        assert_eq!(limits.enter("CT1", OTHER_HOST).unwrap_err(), Exceeded::CallingAe);
        let third = limits.enter("MR1", HOST).expect("another AE from the same host");
        assert_eq!(limits.enter("US1", HOST).unwrap_err(), Exceeded::PeerAddress);
        limits.enter("US1", OTHER_HOST).expect("the other host has room");
        assert_eq!(limits.counts("CT1", HOST), (2, 3));
        drop(first);
        let again = limits.enter("CT1", HOST).expect("a place was given back");
        assert_eq!(limits.enter("MR1", HOST).unwrap_err(), Exceeded::PeerAddress, "the host is full again");
        drop((second, third, again));
        assert_eq!(limits.counts("CT1", HOST), (0, 0));
    }

    #[test]
    fn zero_means_unlimited_and_counts_go_back_to_nothing() {
        let limits = AssociationLimits::new(0, 0);
        let held: Vec<Occupied> = (0..1000).map(|_| limits.enter("CT1", HOST).expect("unlimited")).collect();
        assert_eq!(limits.counts("CT1", HOST), (1000, 1000));
        drop(held);
        assert_eq!(limits.counts("CT1", HOST), (0, 0));
        assert!(limits.open().by_ae.is_empty() && limits.open().by_ip.is_empty());
    }
}
