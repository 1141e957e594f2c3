//! The simulated world's routing policies, built in code so that the library never touches
//! the filesystem: tenant `acme` has policy `default`, weighted openai 70 / anthropic 30.
//! Tenant `globex` deliberately has none, so its requests exercise `policy_not_found`.

use beamline_router::policy::{parse_policy, PolicyStore, DEFAULT_POLICY_ID};

pub const TENANT_WITH_POLICY: &str = "acme";
pub const TENANT_WITHOUT_POLICY: &str = "globex";

const ACME_DEFAULT: &str =
    r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#;

pub fn world_policies() -> PolicyStore {
    let mut store = PolicyStore::new();
    // A fixed document: if it ever stops parsing, the policy DSL changed under the sim.
    let policy = parse_policy(DEFAULT_POLICY_ID, ACME_DEFAULT)
        .unwrap_or_else(|e| panic!("the sim's built-in policy no longer parses: {e}"));
    store.insert(TENANT_WITH_POLICY, policy);
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_has_a_default_policy_and_globex_none() {
        let store = world_policies();
        assert!(store.get(TENANT_WITH_POLICY, DEFAULT_POLICY_ID).is_some());
        assert!(store
            .get(TENANT_WITHOUT_POLICY, DEFAULT_POLICY_ID)
            .is_none());
    }
}
