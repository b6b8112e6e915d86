//! The configuration and live state a tgtd serves: targets with their LUNs,
//! ACLs and bound CHAP accounts, the account list, and the logged-in
//! sessions. Shared by every connection (read mostly) and changed by the
//! management API ([`super::mgmt`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::scsi::ScsiTarget;

/// A target id (tgt's `--tid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(pub u32);

/// Target Session Identifying Handle (never 0 once a session exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tsih(pub u16);

/// The negotiation keys an administrator may change per target with
/// `--op update --name K --value V`, with tgt's defaults.
pub const TARGET_PARAM_DEFAULTS: &[(&str, &str)] = &[
    // tgt declares 8192; a larger segment lets a 64 KiB first burst go as
    // one immediate-data PDU and halves the Data-Out PDUs of big writes.
    ("MaxRecvDataSegmentLength", "262144"),
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("InitialR2T", "Yes"),
    ("MaxOutstandingR2T", "1"),
    ("ImmediateData", "Yes"),
    ("FirstBurstLength", "65536"),
    ("MaxBurstLength", "262144"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "20"),
    ("OFMarkInt", "Reject"),
    ("IFMarkInt", "Reject"),
    ("MaxConnections", "1"),
    ("MaxXmitDataSegmentLength", "8192"),
    ("MaxQueueCmd", "128"),
];

/// One target: its name, SCSI side and access rules.
#[derive(Debug)]
pub struct Target {
    pub tid: Tid,
    pub name: String,
    pub scsi: Arc<ScsiTarget>,
    pub access: RwLock<Access>,
}

/// Who may log in to a target and with which credentials.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Initiator address rules: `ALL`, an address, or `ADDR/PREFIX`.
    pub acl_addresses: Vec<String>,
    /// Initiator names allowed (empty: any name).
    pub acl_names: Vec<String>,
    /// Incoming CHAP users (the initiator authenticates with one of these).
    pub incoming_users: Vec<String>,
    /// Outgoing CHAP user for mutual CHAP (the target authenticates).
    pub outgoing_user: Option<String>,
    /// Negotiation settings (`--op update`), key order as tgt shows them.
    pub params: Vec<(String, String)>,
}

impl Access {
    fn new() -> Self {
        Access {
            params: TARGET_PARAM_DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Access::default()
        }
    }

    /// A target parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when an initiator at `addr` named `name` passes the ACLs.
    /// No address rule at all means nobody (tgt: a target must be bound).
    pub fn allows(&self, addr: IpAddr, name: &str) -> bool {
        let addr_ok = self
            .acl_addresses
            .iter()
            .any(|rule| address_matches(rule, addr));
        let name_ok = self.acl_names.is_empty() || self.acl_names.iter().any(|n| n == name);
        addr_ok && name_ok
    }
}

/// Matches one ACL address rule: `ALL`, an exact address, or `ADDR/PREFIX`.
pub fn address_matches(rule: &str, addr: IpAddr) -> bool {
    if rule.eq_ignore_ascii_case("ALL") {
        return true;
    }
    let addr = canonical(addr);
    let (net, prefix) = match rule.split_once('/') {
        Some((n, p)) => (n, p.parse::<u32>().ok()),
        None => (rule, None),
    };
    let net = net.trim_start_matches('[').trim_end_matches(']');
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (canonical(net), addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A logged-in session, as `--op show` lists it and reinstatement finds it.
#[derive(Clone)]
pub struct SessionEntry {
    pub tsih: Tsih,
    pub tid: Option<Tid>,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    pub peer: IpAddr,
    pub cid: u16,
    /// Closes the session's connection (reinstatement, target delete).
    pub kill: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for SessionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEntry")
            .field("tsih", &self.tsih)
            .field("tid", &self.tid)
            .field("initiator_name", &self.initiator_name)
            .finish()
    }
}

/// Everything a tgtd serves.
#[derive(Debug)]
pub struct Registry {
    /// Failed CHAP logins, to slow down guessing.
    chap_throttle: super::throttle::ChapThrottle,
    targets: RwLock<BTreeMap<Tid, Arc<Target>>>,
    accounts: RwLock<BTreeMap<String, String>>,
    sessions: Mutex<BTreeMap<Tsih, SessionEntry>>,
    next_tsih: AtomicU16,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            chap_throttle: Default::default(),
            targets: RwLock::default(),
            accounts: RwLock::default(),
            sessions: Mutex::default(),
            next_tsih: AtomicU16::new(1),
        }
    }
}

impl Registry {
    /// Failed CHAP logins per initiator.
    pub fn chap_throttle(&self) -> &super::throttle::ChapThrottle {
        &self.chap_throttle
    }

    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// Targets in tid order.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets.read().values().cloned().collect()
    }

    /// The target with this tid.
    pub fn target(&self, tid: Tid) -> Option<Arc<Target>> {
        self.targets.read().get(&tid).cloned()
    }

    /// The target with this name (iSCSI names compare case-insensitively).
    pub fn target_by_name(&self, name: &str) -> Option<Arc<Target>> {
        self.targets
            .read()
            .values()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// Adds a target; false when the tid or the name is taken.
    pub fn add_target(&self, tid: Tid, name: &str) -> bool {
        let mut targets = self.targets.write();
        if targets.contains_key(&tid) || targets.values().any(|t| t.name.eq_ignore_ascii_case(name))
        {
            return false;
        }
        let target = Target {
            tid,
            name: name.to_string(),
            scsi: Arc::new(ScsiTarget::new(name, tid.0)),
            access: RwLock::new(Access::new()),
        };
        targets.insert(tid, Arc::new(target));
        true
    }

    /// Removes a target, returning it.
    pub fn remove_target(&self, tid: Tid) -> Option<Arc<Target>> {
        self.targets.write().remove(&tid)
    }

    /// The CHAP secret of an account.
    pub fn secret(&self, user: &str) -> Option<String> {
        self.accounts.read().get(user).cloned()
    }

    /// All account names, sorted.
    pub fn account_names(&self) -> Vec<String> {
        self.accounts.read().keys().cloned().collect()
    }

    /// Adds an account; false if it exists.
    pub fn add_account(&self, user: &str, secret: &str) -> bool {
        let mut accounts = self.accounts.write();
        if accounts.contains_key(user) {
            return false;
        }
        accounts.insert(user.to_string(), secret.to_string());
        true
    }

    /// Removes an account (and unbinds it everywhere); false if unknown.
    pub fn remove_account(&self, user: &str) -> bool {
        if self.accounts.write().remove(user).is_none() {
            return false;
        }
        for t in self.targets() {
            let mut a = t.access.write();
            a.incoming_users.retain(|u| u != user);
            if a.outgoing_user.as_deref() == Some(user) {
                a.outgoing_user = None;
            }
        }
        true
    }

    /// A fresh TSIH, never 0 and not in use.
    pub fn allocate_tsih(&self) -> Tsih {
        let sessions = self.sessions.lock();
        loop {
            let t = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 && !sessions.contains_key(&Tsih(t)) {
                return Tsih(t);
            }
        }
    }

    /// Records a logged-in session.
    pub fn add_session(&self, entry: SessionEntry) {
        self.sessions.lock().insert(entry.tsih, entry);
    }

    /// Forgets a session.
    pub fn remove_session(&self, tsih: Tsih) {
        self.sessions.lock().remove(&tsih);
    }

    /// The sessions of a target (or discovery sessions for `None`).
    pub fn sessions_of(&self, tid: Option<Tid>) -> Vec<SessionEntry> {
        self.sessions
            .lock()
            .values()
            .filter(|s| s.tid == tid)
            .cloned()
            .collect()
    }

    /// The existing session of this initiator port on this target, if any
    /// (for reinstatement, RFC 7143 6.3.5).
    pub fn find_session(
        &self,
        tid: Option<Tid>,
        initiator_name: &str,
        isid: [u8; 6],
    ) -> Option<SessionEntry> {
        self.sessions
            .lock()
            .values()
            .find(|s| {
                s.tid == tid
                    && s.isid == isid
                    && s.initiator_name.eq_ignore_ascii_case(initiator_name)
            })
            .cloned()
    }

    /// A session by TSIH.
    pub fn session(&self, tsih: Tsih) -> Option<SessionEntry> {
        self.sessions.lock().get(&tsih).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_rules_match_all_exact_and_prefix() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(address_matches("ALL", a));
        assert!(address_matches("10.1.2.3", a));
        assert!(!address_matches("10.1.2.4", a));
        assert!(address_matches("10.1.0.0/16", a));
        assert!(!address_matches("10.2.0.0/16", a));
        assert!(!address_matches("garbage", a));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(address_matches("10.1.2.3", mapped));
    }

    #[test]
    fn access_needs_an_address_rule_and_a_listed_name() {
        let mut acc = Access::new();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!acc.allows(a, "iqn.x"));
        acc.acl_addresses.push("ALL".into());
        assert!(acc.allows(a, "iqn.x"));
        acc.acl_names.push("iqn.y".into());
        assert!(!acc.allows(a, "iqn.x"));
        assert!(acc.allows(a, "iqn.y"));
    }

    #[test]
    fn tsih_is_never_zero_and_targets_are_unique() {
        let r = Registry::new();
        r.next_tsih.store(u16::MAX, Ordering::Relaxed);
        assert_eq!(r.allocate_tsih(), Tsih(u16::MAX));
        assert_eq!(r.allocate_tsih(), Tsih(1));
        assert!(r.add_target(Tid(1), "iqn.a"));
        assert!(!r.add_target(Tid(1), "iqn.b"));
        assert!(!r.add_target(Tid(2), "IQN.A"));
        assert!(r.target_by_name("iqn.A").is_some());
    }
}
