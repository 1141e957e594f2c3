//! Sticky sessions (spec §5.6): (tenant, session value) -> provider, for a TTL.
//!
//! The TTL is the policy's (upstream parsed it and then applied a fixed 3600 s, spec
//! §15.11). A mapping lives for `ttl_ms` from its last write: it is live while
//! `now < written + ttl_ms` and gone at exactly `written + ttl_ms`. A hit refreshes it
//! (spec §5.4 step 7), so a session stays on its provider while it keeps coming back.
//!
//! Expired mappings are treated as absent on read and removed then; `purge_expired`
//! sweeps the rest. The store is bounded by `max_entries`: when full, the mapping that
//! expires first goes (an expired one if there is any). With one TTL per policy that is
//! also the least recently used mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::env::Time;

#[derive(Clone, Debug)]
struct Mapping {
    provider: Arc<str>,
    /// This mapping's key in the expiry index: (expires_at, a sequence number that
    /// breaks ties between mappings expiring in the same millisecond).
    expiry_key: (Time, u64),
}

impl Mapping {
    fn live(&self, now: Time) -> bool {
        self.expiry_key.0 > now
    }
}

#[derive(Clone, Debug)]
pub struct StickyStore {
    by_tenant: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Mapping>>,
    /// (expires_at, seq) -> key; the first entry expires first.
    by_expiry: BTreeMap<(Time, u64), (Arc<str>, Arc<str>)>,
    /// Provider names, held once (a policy names a handful).
    providers: BTreeSet<Arc<str>>,
    next_seq: u64,
    len: usize,
    max_entries: usize,
}

impl StickyStore {
    pub fn new(max_entries: usize) -> Self {
        StickyStore {
            by_tenant: BTreeMap::new(),
            by_expiry: BTreeMap::new(),
            providers: BTreeSet::new(),
            next_seq: 0,
            len: 0,
            max_entries: max_entries.max(1),
        }
    }

    /// Mappings held, expired ones not yet swept included (for the table-size gauge).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The provider a session is pinned to, without refreshing the mapping.
    pub fn get(&mut self, tenant: &str, session: &str, now: Time) -> Option<&str> {
        let live = self.mapping(tenant, session)?.live(now);
        if !live {
            self.remove(tenant, session);
            return None;
        }
        self.mapping(tenant, session).map(|m| &*m.provider)
    }

    /// A sticky hit: the provider a session is pinned to, with its mapping extended to
    /// `now + ttl_ms`. A zero TTL keeps nothing, so it removes the mapping.
    pub fn refresh(&mut self, tenant: &str, session: &str, now: Time, ttl_ms: u64) -> Option<&str> {
        let live = self.mapping(tenant, session)?.live(now);
        if !live || ttl_ms == 0 {
            self.remove(tenant, session);
            return None;
        }
        self.next_seq += 1;
        let expiry_key = (now.after(ttl_ms), self.next_seq);
        let mapping = self.by_tenant.get_mut(tenant)?.get_mut(session)?;
        if let Some(key) = self.by_expiry.remove(&mapping.expiry_key) {
            self.by_expiry.insert(expiry_key, key);
        }
        mapping.expiry_key = expiry_key;
        Some(&*mapping.provider)
    }

    /// Pin a session to a provider for `ttl_ms` from `now`, replacing any mapping it had.
    /// A zero TTL keeps nothing (and drops the old mapping).
    pub fn put(&mut self, tenant: &str, session: &str, provider: &str, now: Time, ttl_ms: u64) {
        self.remove(tenant, session);
        if ttl_ms == 0 {
            return;
        }
        while self.len >= self.max_entries {
            self.evict_first();
        }
        self.next_seq += 1;
        let expiry_key = (now.after(ttl_ms), self.next_seq);
        let tenant: Arc<str> = match self.by_tenant.get_key_value(tenant) {
            Some((t, _)) => t.clone(),
            None => Arc::from(tenant),
        };
        let provider: Arc<str> = match self.providers.get(provider) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = Arc::from(provider);
                self.providers.insert(p.clone());
                p
            }
        };
        let session: Arc<str> = Arc::from(session);
        self.by_expiry
            .insert(expiry_key, (tenant.clone(), session.clone()));
        self.by_tenant.entry(tenant).or_default().insert(
            session,
            Mapping {
                provider,
                expiry_key,
            },
        );
        self.len += 1;
    }

    /// Forget a session's mapping (for instance when its provider is broken). Returns
    /// whether there was one.
    pub fn remove(&mut self, tenant: &str, session: &str) -> bool {
        let Some(sessions) = self.by_tenant.get_mut(tenant) else {
            return false;
        };
        let Some(mapping) = sessions.remove(session) else {
            return false;
        };
        if sessions.is_empty() {
            self.by_tenant.remove(tenant);
        }
        self.by_expiry.remove(&mapping.expiry_key);
        self.len -= 1;
        true
    }

    /// Drop every mapping expired at `now`. Returns how many went.
    pub fn purge_expired(&mut self, now: Time) -> usize {
        let mut purged = 0;
        while self
            .by_expiry
            .first_key_value()
            .is_some_and(|(&(expires_at, _), _)| expires_at <= now)
        {
            self.evict_first();
            purged += 1;
        }
        purged
    }

    fn mapping(&self, tenant: &str, session: &str) -> Option<&Mapping> {
        self.by_tenant.get(tenant)?.get(session)
    }

    /// Drop the mapping that expires first.
    fn evict_first(&mut self) {
        let Some((_, (tenant, session))) = self.by_expiry.pop_first() else {
            return;
        };
        if let Some(sessions) = self.by_tenant.get_mut(&tenant) {
            if sessions.remove(&session).is_some() {
                self.len -= 1;
            }
            if sessions.is_empty() {
                self.by_tenant.remove(&tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ttl_is_honoured_to_the_millisecond() {
        let mut s = StickyStore::new(8);
        s.put("acme", "sess-1", "openai", Time(1_000), 500);
        assert_eq!(s.get("acme", "sess-1", Time(1_000)), Some("openai"));
        assert_eq!(s.get("acme", "sess-1", Time(1_499)), Some("openai"));
        assert_eq!(s.get("acme", "sess-1", Time(1_500)), None);
        assert!(s.is_empty(), "an expired mapping is removed on read");
    }

    #[test]
    fn a_hit_refreshes_the_mapping() {
        let mut s = StickyStore::new(8);
        s.put("acme", "sess-1", "openai", Time(0), 1_000);
        assert_eq!(
            s.refresh("acme", "sess-1", Time(900), 1_000),
            Some("openai")
        );
        assert_eq!(s.get("acme", "sess-1", Time(1_899)), Some("openai"));
        assert_eq!(s.get("acme", "sess-1", Time(1_900)), None);
        // Too late to refresh: gone.
        s.put("acme", "sess-2", "openai", Time(0), 1_000);
        assert_eq!(s.refresh("acme", "sess-2", Time(1_000), 1_000), None);
        assert!(s.is_empty());
        assert_eq!(s.refresh("acme", "never", Time(0), 1_000), None);
    }

    #[test]
    fn put_replaces_and_zero_ttl_keeps_nothing() {
        let mut s = StickyStore::new(8);
        s.put("acme", "sess", "openai", Time(0), 1_000);
        s.put("acme", "sess", "anthropic", Time(10), 1_000);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("acme", "sess", Time(1_005)), Some("anthropic"));
        s.put("acme", "sess", "openai", Time(20), 0);
        assert!(s.is_empty());
        s.put("acme", "sess", "openai", Time(20), 1_000);
        assert_eq!(s.refresh("acme", "sess", Time(30), 0), None);
        assert!(s.is_empty());
    }

    #[test]
    fn tenants_are_isolated() {
        let mut s = StickyStore::new(8);
        s.put("acme", "sess", "openai", Time(0), 1_000);
        s.put("globex", "sess", "anthropic", Time(0), 1_000);
        assert_eq!(s.get("acme", "sess", Time(1)), Some("openai"));
        assert_eq!(s.get("globex", "sess", Time(1)), Some("anthropic"));
        assert!(s.remove("acme", "sess"));
        assert!(!s.remove("acme", "sess"));
        assert_eq!(s.get("globex", "sess", Time(1)), Some("anthropic"));
        assert_eq!(s.get("initech", "sess", Time(1)), None);
    }

    #[test]
    fn bound_evicts_the_earliest_expiring() {
        let mut s = StickyStore::new(2);
        s.put("acme", "a", "p1", Time(0), 10_000);
        s.put("acme", "b", "p2", Time(0), 5_000);
        s.put("acme", "c", "p3", Time(0), 7_000); // b expires first: evicted
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("acme", "b", Time(1)), None);
        assert_eq!(s.get("acme", "a", Time(1)), Some("p1"));
        // A refresh moves a mapping to the back of the line.
        assert!(s.refresh("acme", "c", Time(4_000), 7_000).is_some());
        s.put("acme", "d", "p4", Time(4_000), 1_000); // a (10 000) now expires before c (11 000)
        assert_eq!(s.get("acme", "a", Time(4_001)), None);
        assert_eq!(s.get("acme", "c", Time(4_001)), Some("p3"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn purge_expired_sweeps_only_the_expired() {
        let mut s = StickyStore::new(8);
        s.put("acme", "a", "p", Time(0), 100);
        s.put("acme", "b", "p", Time(0), 200);
        s.put("globex", "c", "p", Time(0), 300);
        assert_eq!(s.purge_expired(Time(99)), 0);
        assert_eq!(s.purge_expired(Time(200)), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.purge_expired(Time(1_000)), 1);
        assert!(s.by_tenant.is_empty() && s.by_expiry.is_empty());
    }

    proptest! {
        /// Against a plain model: every read agrees, and the indexes stay in step.
        #[test]
        fn agrees_with_a_model(
            ops in proptest::collection::vec((0u8..4, 0u8..3, 0u8..4, 0u64..300, 0u64..1_000), 1..200),
        ) {
            let cap = 5;
            let mut s = StickyStore::new(cap);
            let mut model: BTreeMap<(u8, u8), (String, u64)> = BTreeMap::new();
            let mut now = 0u64;
            for (op, tenant, session, step, ttl) in ops {
                now += step;
                let (t, k) = (format!("t{tenant}"), format!("s{session}"));
                let live = model.get(&(tenant, session)).filter(|(_, exp)| *exp > now).map(|(p, _)| p.clone());
                match op {
                    0 => {
                        prop_assert_eq!(s.get(&t, &k, Time(now)).map(str::to_string), live);
                    }
                    1 => {
                        let got = s.refresh(&t, &k, Time(now), ttl).map(str::to_string);
                        if ttl == 0 { prop_assert_eq!(got, None) } else { prop_assert_eq!(got, live.clone()) }
                        if let (Some(p), true) = (live, ttl > 0) {
                            model.insert((tenant, session), (p, now + ttl));
                        }
                    }
                    2 => {
                        let provider = format!("p{}", step % 3);
                        s.put(&t, &k, &provider, Time(now), ttl);
                        model.insert((tenant, session), (provider, now + ttl));
                    }
                    _ => { s.purge_expired(Time(now)); }
                }
                // Eviction may drop live mappings the model still has, never invent any.
                prop_assert!(s.len() <= cap);
                prop_assert_eq!(s.len(), s.by_expiry.len());
                prop_assert_eq!(s.len(), s.by_tenant.values().map(BTreeMap::len).sum::<usize>());
                for (key, (tenant_id, session_id)) in &s.by_expiry {
                    let m = &s.by_tenant[tenant_id][session_id];
                    prop_assert_eq!(&m.expiry_key, key);
                }
                for (tenant_id, sessions) in &s.by_tenant {
                    for (session_id, m) in sessions {
                        let model_key = (tenant_id[1..].parse::<u8>().unwrap(), session_id[1..].parse::<u8>().unwrap());
                        let (p, exp) = &model[&model_key];
                        prop_assert_eq!(&*m.provider, p.as_str());
                        prop_assert_eq!(m.expiry_key.0, Time(*exp));
                    }
                }
                // Sync the model with evictions (only mappings absent from the store).
                model.retain(|&(tn, sn), _| s.mapping(&format!("t{tn}"), &format!("s{sn}")).is_some());
            }
        }
    }
}
