//! The simulated world's routing policies, built in code so that the library never touches
//! the filesystem:
//! - tenant `acme`, policy `default`: weighted openai 70 / anthropic 30, with breakers fed
//!   by CAF results;
//! - tenant `acme`, policy `ext`: the same providers behind the three built-in extensions
//!   (normalize_text required, pii_guard blocking, mask_pii optional);
//! - tenant `initech`, policy `default`: one provider and a tight rate limit, so that
//!   bursts get `rate_limited` replies; with shared answers on, also a sticky session keyed
//!   by tenant (30 s), so that the routers read and write sessions in the shared bucket
//!   (one provider: the session never changes which provider is chosen, only the reason);
//! - tenant `globex` deliberately has none: its requests exercise `policy_not_found`.

use beamline_router::policy::{parse_policy, PolicyStore, DEFAULT_POLICY_ID};

pub const TENANT_WITH_POLICY: &str = "acme";
pub const TENANT_RATE_LIMITED: &str = "initech";
pub const TENANT_WITHOUT_POLICY: &str = "globex";
pub const EXT_POLICY: &str = "ext";
pub const PROVIDERS: [&str; 2] = ["openai", "anthropic"];

const ACME_DEFAULT: &str = r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}],
  "circuit_breaker":{"enabled":true,"failure_threshold":5,"success_threshold":2,"timeout_ms":20000,"half_open_max_calls":2}}"#;

const ACME_EXT: &str = r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}],
  "pre":[{"id":"normalize_text","mode":"required","config":{"lowercase":true}}],
  "validators":[{"id":"pii_guard","on_fail":"block"}],
  "post":[{"id":"mask_pii","mode":"optional","config":{"mask_email":true}}]}"#;

const INITECH_DEFAULT: &str = r#"{"providers":[{"name":"openai","weight":100}],
  "rate_limit":{"enabled":true,"requests_per_second":2,"burst":4}}"#;

const INITECH_STICKY: &str = r#"{"providers":[{"name":"openai","weight":100}],
  "rate_limit":{"enabled":true,"requests_per_second":2,"burst":4},
  "sticky":{"enabled":true,"session_key":"tenant_id","ttl":"30s"}}"#;

/// The policies every router process loads; `shared_sessions` makes initech sticky.
pub fn world_policies(shared_sessions: bool) -> PolicyStore {
    let mut store = PolicyStore::new();
    let initech = if shared_sessions {
        INITECH_STICKY
    } else {
        INITECH_DEFAULT
    };
    for (tenant, id, doc) in [
        (TENANT_WITH_POLICY, DEFAULT_POLICY_ID, ACME_DEFAULT),
        (TENANT_WITH_POLICY, EXT_POLICY, ACME_EXT),
        (TENANT_RATE_LIMITED, DEFAULT_POLICY_ID, initech),
    ] {
        // Fixed documents: if one stops parsing, the policy DSL changed under the sim.
        let policy = parse_policy(id, doc).unwrap_or_else(|e| {
            panic!("the sim's built-in policy {tenant}/{id} no longer parses: {e}")
        });
        store.insert(tenant, policy);
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_has_its_policies() {
        let store = world_policies(false);
        assert!(world_policies(true)
            .get(TENANT_RATE_LIMITED, DEFAULT_POLICY_ID)
            .unwrap()
            .sticky
            .is_some());
        assert!(store.get(TENANT_WITH_POLICY, DEFAULT_POLICY_ID).is_some());
        let ext = store.get(TENANT_WITH_POLICY, EXT_POLICY).unwrap();
        assert_eq!(ext.pipeline_len(), 3);
        assert!(store
            .get(TENANT_RATE_LIMITED, DEFAULT_POLICY_ID)
            .unwrap()
            .rate_limit
            .is_some());
        assert!(store
            .get(TENANT_WITHOUT_POLICY, DEFAULT_POLICY_ID)
            .is_none());
    }
}
