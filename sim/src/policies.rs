//! The simulated world's routing policies, built in code so that the library never touches
//! the filesystem:
//! - tenant `acme`, policy `default`: weighted openai 70 / anthropic 30, with breakers fed
//!   by CAF results;
//! - tenant `acme`, policy `ext`: the same providers behind the three built-in extensions
//!   (normalize_text required, pii_guard blocking, mask_pii optional);
//! - tenant `initech`, policy `default`: two providers (openai 50 / anthropic 50), a
//!   tight rate limit, so that bursts get `rate_limited` replies, and a sticky session
//!   keyed by tenant: 3 s without shared answers, so that sessions expire between the
//!   tenant's requests and are drawn again; 30 s with them, so that the routers read
//!   and write sessions in the shared bucket and adopt each other's;
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

const INITECH_DEFAULT: &str = r#"{"providers":[{"name":"openai","weight":50},{"name":"anthropic","weight":50}],
  "rate_limit":{"enabled":true,"requests_per_second":2,"burst":4},
  "sticky":{"enabled":true,"session_key":"tenant_id","ttl":"3s"}}"#;

const INITECH_SHARED: &str = r#"{"providers":[{"name":"openai","weight":50},{"name":"anthropic","weight":50}],
  "rate_limit":{"enabled":true,"requests_per_second":2,"burst":4},
  "sticky":{"enabled":true,"session_key":"tenant_id","ttl":"30s"}}"#;

/// The policies every router process loads; `shared_sessions` gives initech's sessions
/// the long TTL that makes the routers share them.
pub fn world_policies(shared_sessions: bool) -> PolicyStore {
    let mut store = PolicyStore::new();
    let initech = if shared_sessions {
        INITECH_SHARED
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
        for shared in [false, true] {
            let initech = world_policies(shared);
            let initech = initech.get(TENANT_RATE_LIMITED, DEFAULT_POLICY_ID).unwrap();
            assert!(initech.sticky.is_some());
            assert_eq!(initech.providers.len(), 2, "a session can move");
        }
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
