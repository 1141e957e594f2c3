//! Results and assignment acks from CAF workers. A result feeds its provider's breaker
//! and emits one usage event, once per correlation key however often it arrives.

use crate::contracts::{ExecResult, UsageEvent, VERSION};
use crate::intake::{self, IntakeRules};
use crate::policy::DEFAULT_POLICY_ID;

use super::answers::{SeqKey, StoredPublish};
use super::breaker::{classify, BreakerState, CallOutcome};
use super::config::RouterConfig;
use super::decider::breaker_config;
use super::env::Env;
use super::flight::Flights;
use super::flight::{InFlight, Purpose};
use super::io::Delivery;
use super::outputs;
use super::reply::to_bytes;
use super::services::Services;
use super::stats::Stats;
use crate::policy::PolicyStore;

/// The results and acks flow, over what it may touch: the configuration and policies
/// (read), the stats, the services (result book, breakers, provider averages) and the
/// message table (to publish, and to see whether a key's carrier is still in flight).
pub(super) struct ResultFlow<'a> {
    pub config: &'a RouterConfig,
    pub policies: &'a PolicyStore,
    pub stats: &'a mut Stats,
    pub services: &'a mut Services,
    pub flights: &'a mut Flights,
}

impl ResultFlow<'_> {
    fn refuse(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        d: &Delivery,
        rejection: &crate::intake::Rejection,
        env: &mut impl Env,
    ) {
        outputs::refuse(
            self.config,
            self.stats,
            self.flights,
            seq,
            msg,
            d,
            rejection,
            env,
        );
    }

    fn intake_rules(&self) -> IntakeRules<'_> {
        IntakeRules {
            max_payload_bytes: self.config.max_payload_bytes,
            min_payload_bytes: self.config.min_payload_bytes,
            tenant_allowlist: self.config.tenant_allowlist.as_deref(),
        }
    }

    pub(super) fn start_result(
        &mut self,
        seq: SeqKey,
        d: &Delivery,
        msg: &mut InFlight,
        env: &mut impl Env,
    ) {
        let result = match intake::validate_result(&d.headers, &d.payload, &self.intake_rules()) {
            Ok(r) => r,
            Err(rejection) => return self.refuse(seq, msg, d, &rejection, env),
        };
        self.stats.results += 1;
        msg.origin.request_id = result.request_id.clone();
        msg.origin.tenant_id = Some(result.tenant_id.clone());
        let key = result.correlation_key().to_string();

        let carrier_busy = |flights: &Flights, carrier: Option<SeqKey>| {
            carrier.is_some_and(|c| c != seq && flights.messages.contains_key(&c))
        };
        if let Some(entry) = self.services.results.get(&key) {
            if entry.settled {
                // Seen before, its usage event confirmed: nothing more to do.
                self.stats.results_duplicate += 1;
                env.probe("results.duplicate");
                return;
            }
            if carrier_busy(self.flights, entry.carrier) {
                // Being handled as another message, which the server may already have
                // given up on (its deliveries exhausted while we wait for the PubAck):
                // publish the same event too, under the same message id (the stream
                // drops the copy), and ack this one only once that is confirmed. Only
                // the carrier marks the key settled.
                self.stats.results_duplicate += 1;
                env.probe("results.duplicate");
                let publish = outputs::publish_stored(entry.usage.clone());
                self.flights
                    .send(seq, msg, publish, Purpose::UsageCopy, env);
                return;
            }
            // Seen, but its usage event never confirmed: the same event again, carried
            // (and, once confirmed, settled) by this message.
            msg.origin.result_key = Some(key.clone());
            let publish = outputs::publish_stored(entry.usage.clone());
            if let Some(e) = self.services.results.get_mut(&key) {
                e.carrier = Some(seq);
            }
            self.flights.send(seq, msg, publish, Purpose::Usage, env);
            return;
        }

        // First sight: feed the breaker and the provider's averages, once.
        if let Some(provider) = &result.provider_id {
            let outcome = classify(
                result.status.as_str(),
                result.error_code.as_deref(),
                result.error_type.as_deref(),
                result.error_message.as_deref(),
            );
            let cfg = self
                .policies
                .get(&result.tenant_id, DEFAULT_POLICY_ID)
                .and_then(breaker_config)
                .unwrap_or_else(|| self.config.breaker_defaults.clone());
            // Planted bug `breaker-never-closes`: probes that succeed are not counted.
            let outcome = if outcome == CallOutcome::Success
                && env.planted("breaker-never-closes")
                && self
                    .services
                    .breakers
                    .stored_state(&result.tenant_id, provider)
                    == Some(BreakerState::HalfOpen)
            {
                CallOutcome::Ignored
            } else {
                outcome
            };
            // Planted bug `breaker-double-feed`: the result is fed twice.
            let feeds = if env.planted("breaker-double-feed") {
                2
            } else {
                1
            };
            let mut transition = None;
            for _ in 0..feeds {
                self.stats.breaker_records += 1;
                transition = self
                    .services
                    .breakers
                    .record(
                        &result.tenant_id,
                        provider,
                        env.now(),
                        outcome,
                        Some(result.latency_ms),
                        &cfg,
                    )
                    .or(transition);
            }
            let probe = transition.and_then(|t| match (t.from, t.to) {
                (BreakerState::HalfOpen, BreakerState::Closed) => {
                    Some("breaker.closed_after_probes")
                }
                (BreakerState::HalfOpen, BreakerState::Open) => {
                    Some("breaker.reopened_from_half_open")
                }
                (BreakerState::Closed, BreakerState::Open) => Some("breaker.opened"),
                _ => None,
            });
            if let Some(name) = probe {
                env.probe(name);
            }
            if outcome == CallOutcome::Success {
                self.services.provider_stats.record(
                    &result.tenant_id,
                    provider,
                    result.latency_ms,
                    result.cost,
                );
            }
        }
        // Only the carrier of the usage event marks the key settled: a duplicate acked
        // meanwhile must not, or a failed usage publish would never be retried.
        msg.origin.result_key = Some(key.clone());
        let usage = self.usage_event(&result, &key, env.now().millis());
        self.services.results.insert(key, usage.clone(), seq);
        self.flights.send(
            seq,
            msg,
            outputs::publish_stored(usage),
            Purpose::Usage,
            env,
        );
    }

    fn usage_event(&self, result: &ExecResult, key: &str, now_ms: u64) -> StoredPublish {
        let usage_id = format!("usage-{key}");
        let event = UsageEvent {
            version: VERSION.to_string(),
            usage_id: usage_id.clone(),
            tenant_id: result.tenant_id.clone(),
            provider_id: result.provider_id.clone().unwrap_or_default(),
            event_type: result.job_type.clone().unwrap_or_default(),
            latency_ms: result.latency_ms,
            cost: result.cost,
            status: result.status,
            trace_id: result.trace_id.clone(),
            timestamp: result.timestamp.unwrap_or(now_ms),
            assignment_id: result.assignment_id.clone(),
            request_id: result.request_id.clone(),
        };
        StoredPublish {
            subject: self.config.usage_subject.clone(),
            headers: vec![("tenant_id".to_string(), result.tenant_id.clone())],
            payload: to_bytes(&event),
            msg_id: usage_id,
        }
    }

    /// Acks are informational: validated, counted, acked. Invalid ones are dead-lettered.
    pub(super) fn start_assignment_ack(
        &mut self,
        seq: SeqKey,
        d: &Delivery,
        msg: &mut InFlight,
        env: &mut impl Env,
    ) {
        match intake::validate_ack(&d.headers, &d.payload, &self.intake_rules()) {
            Ok(ack) => {
                self.stats.assignment_acks += 1;
                msg.origin.tenant_id = Some(ack.tenant_id);
            }
            Err(rejection) => self.refuse(seq, msg, d, &rejection, env),
        }
    }
}
