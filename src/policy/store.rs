//! Policies keyed by (tenant, policy_id). Ordered maps only: iteration order is part of
//! determinism.

use std::collections::BTreeMap;

use super::Policy;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyStore {
    /// tenant -> policy_id -> policy: looked up by `&str` without allocating.
    policies: BTreeMap<String, BTreeMap<String, Policy>>,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, tenant_id: &str, policy: Policy) {
        self.policies
            .entry(tenant_id.to_string())
            .or_default()
            .insert(policy.policy_id.clone(), policy);
    }

    pub fn get(&self, tenant_id: &str, policy_id: &str) -> Option<&Policy> {
        self.policies.get(tenant_id)?.get(policy_id)
    }

    pub fn len(&self) -> usize {
        self.policies.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// (tenant, policy_id) pairs in order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.policies
            .iter()
            .flat_map(|(t, ps)| ps.keys().map(move |p| (t.as_str(), p.as_str())))
    }

    /// (tenant, policy) pairs in (tenant, policy_id) order, e.g. to warn about each
    /// policy's `ignored_keys` after loading.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.policies
            .iter()
            .flat_map(|(t, ps)| ps.values().map(move |p| (t.as_str(), p)))
    }
}
