//! Policies keyed by (tenant, policy_id). Ordered maps only: iteration order is part of
//! determinism.

use std::collections::BTreeMap;

use super::Policy;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyStore {
    policies: BTreeMap<(String, String), Policy>,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, tenant_id: &str, policy: Policy) {
        self.policies
            .insert((tenant_id.to_string(), policy.policy_id.clone()), policy);
    }

    pub fn get(&self, tenant_id: &str, policy_id: &str) -> Option<&Policy> {
        self.policies
            .get(&(tenant_id.to_string(), policy_id.to_string()))
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// (tenant, policy_id) pairs in order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.policies.keys().map(|(t, p)| (t.as_str(), p.as_str()))
    }

    /// (tenant, policy) pairs in (tenant, policy_id) order, e.g. to warn about each
    /// policy's `ignored_keys` after loading.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.policies.iter().map(|((t, _), p)| (t.as_str(), p))
    }
}
