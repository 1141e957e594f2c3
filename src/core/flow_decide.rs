//! The decide flow: intake, idempotent replay, rate limit, extension pipeline, provider
//! choice, reply and assignment.
//!
//! `DecideFlow` works over disjoint borrows of the router's parts and needs no `Router`.
//! It never decides the fate of the message an input advanced: its entry points say which
//! message that was (`Advanced`), and the router keeps it alive and resolves it once the
//! flow returns. The copies waiting on an idempotency key are the exception: they are
//! resolved (`Fates`) the moment the claim is released, before the holder's own reply goes
//! out, as they always were.

use serde_json::{Map, Value};

use crate::contracts::{DecisionReason, ErrorCode};
use crate::intake::{self, IntakeRules};
use crate::policy::{ExtensionMode, OnFail, Policy, PolicyStore, DEFAULT_POLICY_ID};

use super::answers::{SeqKey, StoredPublish};
use super::assignment;
use super::breaker::Breakers;
use super::config::RouterConfig;
use super::decider::{self, Stores};
use super::env::{Env, Time};
use super::extensions::{
    AfterCall, CallResult, ExtensionGate, OnFailure, Pipeline, PipelineItem, Stage, Step,
};
use super::fate::Fates;
use super::flight::{DecideWork, Flights, InFlight, PendingAnswer, Purpose, TimerPurpose, Work};
use super::io::{Command, Delivery, KvOp, KvOutcome, RequestOutcome};
use super::outputs;
use super::reply;
use super::services::Services;
use super::shared::{self, SharedAnswer, SharedSession};
use super::stats::Stats;

/// The decide flow, over what it may touch: the configuration and policies (read), the
/// stats, the services (answer book, rate limiter, breakers, sticky sessions, provider
/// averages) and the message table (claims, pending I/O, timers, publishing).
pub(super) struct DecideFlow<'a> {
    pub config: &'a RouterConfig,
    pub policies: &'a PolicyStore,
    pub stats: &'a mut Stats,
    pub services: &'a mut Services,
    pub flights: &'a mut Flights,
}

/// The message a decide input advanced, for the router to finish with once the flow has
/// returned: keep it alive (`+WPI`) if asked, then resolve it if nothing is pending.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Advanced {
    pub seq: SeqKey,
    pub keep_alive: bool,
}

impl DecideFlow<'_> {
    fn fates(&mut self) -> Fates<'_> {
        Fates {
            config: self.config,
            stats: self.stats,
            services: self.services,
            flights: self.flights,
        }
    }

    /// Run `f` on message `seq`, taken out of the table and put back after; `None` if the
    /// message is not held. The flow's one take and put: while it holds a message, deciding
    /// reaches other entries of the table (a released claim's waiters, `release_claim`)
    /// and publishes through `Flights::send`, which borrows all of `flights` beside the
    /// message. It is then out of the table just as a new message is during
    /// `start_decide` (the router inserts it after): no lookup of the table finds it.
    fn with_message<R>(
        &mut self,
        seq: SeqKey,
        f: impl FnOnce(&mut Self, &mut InFlight) -> R,
    ) -> Option<R> {
        let mut msg = self.flights.messages.remove(&seq)?;
        let r = f(self, &mut msg);
        self.flights.messages.insert(seq, msg);
        Some(r)
    }

    /// Start deciding a new message, not yet in the table: the router inserts it and
    /// resolves it after.
    pub(super) fn start_decide(
        &mut self,
        seq: SeqKey,
        d: &Delivery,
        msg: &mut InFlight,
        env: &mut impl Env,
    ) {
        let reply_to = outputs::reply_subject(self.config, &d.headers);
        msg.origin.reply_to = Some(reply_to.clone());
        let rules = IntakeRules {
            max_payload_bytes: self.config.max_payload_bytes,
            min_payload_bytes: self.config.min_payload_bytes,
            tenant_allowlist: self.config.tenant_allowlist.as_deref(),
        };
        let request = match intake::validate_decide(&d.subject, &d.headers, &d.payload, &rules) {
            Ok(request) => request,
            Err(rejection) => {
                self.stats.replies_error += 1;
                let body = reply::rejection(&rejection);
                self.flights.send(
                    seq,
                    msg,
                    outputs::core_publish(reply_to, Vec::new(), body),
                    Purpose::Reply,
                    env,
                );
                outputs::refuse(
                    self.config,
                    self.stats,
                    self.flights,
                    seq,
                    msg,
                    d,
                    &rejection,
                    env,
                );
                return;
            }
        };
        msg.origin.request_id = Some(request.request_id.clone());
        msg.origin.tenant_id = Some(request.tenant_id.clone());

        // Answered before, as an earlier delivery of this message whose publishes failed,
        // or as another message with the same idempotency key: the same bytes again.
        // A request is never decided twice.
        if let Some((bytes, assignment)) = self.services.answers.decided(seq.1) {
            let (bytes, assignment) = (bytes.to_vec(), assignment.cloned());
            self.stats.idempotent_replays += 1;
            env.probe("answer.replayed_for_seq");
            self.flights.send(
                seq,
                msg,
                outputs::core_publish(reply_to, Vec::new(), bytes),
                Purpose::Reply,
                env,
            );
            if let Some(a) = assignment {
                let publish = outputs::publish_stored(a);
                self.flights
                    .send(seq, msg, publish, Purpose::Assignment, env);
            }
            return;
        }
        let claim = request
            .idempotency_key
            .as_ref()
            .map(|key| (request.tenant_id.clone(), key.clone()));
        if let Some(claim) = &claim {
            if let Some(bytes) = self.services.answers.reply_for_key(claim, env.now()) {
                let bytes = bytes.to_vec();
                self.stats.idempotent_replays += 1;
                env.probe("answer.replayed_for_key");
                self.flights.send(
                    seq,
                    msg,
                    outputs::core_publish(reply_to, Vec::new(), bytes),
                    Purpose::Reply,
                    env,
                );
                return;
            }
            let holder = self.flights.claims.get(claim).map(|(holder, _)| *holder);
            if holder.is_some_and(|h| h != seq && self.flights.messages.contains_key(&h)) {
                // Being decided right now by another message: wait for its answer, so
                // that both get the same bytes.
                if let Some((_, waiters)) = self.flights.claims.get_mut(claim) {
                    waiters.push(seq);
                }
                msg.work = Work::AwaitingClaim { reply_to };
                return;
            }
        }

        let policy_id = request
            .policy_id
            .clone()
            .unwrap_or_else(|| DEFAULT_POLICY_ID.to_string());
        let Some(policy) = self.policies.get(&request.tenant_id, &policy_id) else {
            let body = reply::policy_not_found(&request, &policy_id);
            self.answer(seq, msg, reply_to, claim, body, None, false, env);
            return;
        };
        if let Some(limit) = policy.rate_limit {
            let rps = limit.requests_per_second.min(u64::from(u32::MAX)) as u32;
            // Planted bugs: a bucket that never refills (its clock frozen at zero), or
            // one that refills ten times too fast.
            let (at, rps) = if env.planted("bucket-never-refills") {
                (Time(0), rps)
            } else if env.planted("bucket-refills-fast") {
                (env.now(), rps.saturating_mul(10))
            } else {
                (env.now(), rps)
            };
            let checked = self.services.rate_limiter.check(
                &request.tenant_id,
                &policy_id,
                at,
                rps,
                limit.burst.min(u64::from(u32::MAX)) as u32,
            );
            if checked.is_ok() {
                self.stats.rate_admitted += 1;
            }
            if let Err(limited) = checked {
                self.stats.rate_limited += 1;
                env.probe("limit.reached");
                // Not recorded under the idempotency key: a retry after the wait must
                // be decided, not refused again from the book.
                let body = reply::rate_limited(&request, &limited);
                self.stats.replies_error += 1;
                self.flights.send(
                    seq,
                    msg,
                    outputs::core_publish(reply_to, Vec::new(), body),
                    Purpose::Reply,
                    env,
                );
                return;
            }
        }
        let mut context = request.constraints.clone();
        context.extend(request.metadata.clone());
        context.insert("tenant_id".into(), request.tenant_id.clone().into());
        let message = request
            .task
            .payload
            .clone()
            .map(Value::Object)
            .unwrap_or_else(|| {
                request
                    .task
                    .payload_ref
                    .clone()
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            });
        let pipeline = Pipeline::new(
            pipeline_items(policy),
            request.tenant_id.clone(),
            request.trace_id.clone(),
            message,
            context,
        );
        if let Some(claim) = &claim {
            self.flights.claims.insert(claim.clone(), (seq, Vec::new()));
        }
        msg.work = Work::Deciding(Box::new(DecideWork {
            request,
            policy_id,
            reply_to,
            inbound_headers: d.headers.clone(),
            pipeline,
            decision: None,
            extra: Map::new(),
            sticky_checked: false,
        }));
        self.step_decide(seq, msg, env);
    }

    /// Resume a message parked on an extension retry timer. The router resolves it after
    /// (without a keep-alive, as it always was).
    pub(super) fn continue_decide(&mut self, seq: SeqKey, env: &mut impl Env) -> Option<Advanced> {
        self.with_message(seq, |flow, msg| flow.step_decide(seq, msg, env))?;
        Some(Advanced {
            seq,
            keep_alive: false,
        })
    }

    /// An extension call's outcome: on with the pipeline, retry later, or fail it.
    pub(super) fn on_request_done(
        &mut self,
        id: u64,
        outcome: RequestOutcome,
        env: &mut impl Env,
    ) -> Option<Advanced> {
        let seq = self.flights.requests.remove(&id)?;
        self.with_message(seq, |flow, msg| flow.request_done(seq, msg, outcome, env))?;
        Some(Advanced {
            seq,
            keep_alive: true,
        })
    }

    fn request_done(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        outcome: RequestOutcome,
        env: &mut impl Env,
    ) {
        let result = match outcome {
            RequestOutcome::Reply { payload } => CallResult::Reply(payload),
            RequestOutcome::Timeout => CallResult::Timeout,
            // Planted bug `extension-retry-errors`: an error is retried like a time-out.
            RequestOutcome::Failed { .. } if env.planted("extension-retry-errors") => {
                CallResult::Timeout
            }
            RequestOutcome::Failed { reason } => CallResult::Error(reason),
        };
        if !matches!(result, CallResult::Reply(_)) {
            self.stats.extension_failures += 1;
            env.probe("extension.failed");
        }
        let now = env.now();
        let outcome = match &mut msg.work {
            Work::Deciding(work) => {
                let mut gate = Gate {
                    breakers: &mut self.services.extension_breakers,
                    config: &self.config.breaker_defaults,
                    now,
                };
                Some(
                    work.pipeline
                        .on_result(&self.config.extensions, &mut gate, result),
                )
            }
            Work::Publishing | Work::AwaitingClaim { .. } | Work::Claiming(_) => None,
        };
        match outcome {
            Some(Ok(AfterCall::RetryAfter(delay))) => {
                env.probe("extension.retry_scheduled");
                // BUGGIFY: the retry timer fires late; the request's deadline still holds.
                let late_ms = if env.buggify("router.extension_retry_late") {
                    super::fate::LATE_TIMER_MS
                } else {
                    0
                };
                self.flights.timers.set(
                    now.after(delay + late_ms),
                    TimerPurpose::RetryExtension(seq),
                );
            }
            Some(Ok(AfterCall::Continue)) => self.step_decide(seq, msg, env),
            Some(Err(error)) => self.fail_pipeline(seq, msg, error, env),
            None => {}
        }
    }

    /// Drive the pipeline until it needs a call, or finishes.
    fn step_decide(&mut self, seq: SeqKey, msg: &mut InFlight, env: &mut impl Env) {
        loop {
            let now = env.now();
            let Work::Deciding(work) = &mut msg.work else {
                return;
            };
            if deadline_passed(&work.pipeline.context, now) {
                let body = reply::error(
                    &work.request,
                    ErrorCode::Internal,
                    "deadline_exceeded",
                    "Deadline exceeded before a decision".into(),
                    Map::new(),
                );
                self.finish_with_error(seq, msg, body, env);
                return;
            }
            let mut gate = Gate {
                breakers: &mut self.services.extension_breakers,
                config: &self.config.breaker_defaults,
                now,
            };
            match work.pipeline.advance(&self.config.extensions, &mut gate) {
                Step::Call(call) => {
                    let id = self.flights.next_id();
                    self.flights.requests.insert(id, seq);
                    self.stats.extension_calls += 1;
                    let headers = super::propagation::extension_headers(
                        &work.request,
                        &work.inbound_headers,
                        &call.extension_id,
                    );
                    env.execute(Command::Request {
                        id,
                        subject: call.subject,
                        headers,
                        payload: call.payload,
                        timeout_ms: call.timeout_ms,
                    });
                    return;
                }
                Step::Select => {
                    let policy = self.policies.get(&work.request.tenant_id, &work.policy_id);
                    let Some(policy) = policy else {
                        let body = reply::policy_not_found(&work.request, &work.policy_id);
                        self.finish_with_error(seq, msg, body, env);
                        return;
                    };
                    let session = self
                        .config
                        .shared_sticky
                        .then(|| decider::session_of(policy, &work.pipeline.context))
                        .flatten();
                    if let (Some((value, _)), false) = (&session, work.sticky_checked) {
                        work.sticky_checked = true;
                        let tenant = &work.request.tenant_id;
                        if self.services.sticky.get(tenant, value, now).is_none() {
                            // Another instance may have pinned this session: ask first.
                            let key = shared::sticky_key(tenant, value);
                            let id = self.flights.next_id();
                            self.flights.kv_lookups.insert(id, seq);
                            env.execute(Command::Kv {
                                id,
                                op: KvOp::Get { key },
                            });
                            return;
                        }
                    }
                    let chosen = decider::choose(
                        policy,
                        &work.request.tenant_id,
                        &work.pipeline.context,
                        now,
                        Stores {
                            breakers: &mut self.services.breakers,
                            sticky: &mut self.services.sticky,
                        },
                        env,
                    );
                    match chosen {
                        Ok(choice) => {
                            env.probe(match choice.reason {
                                DecisionReason::Sticky => "decision.sticky_hit",
                                DecisionReason::Weighted | DecisionReason::Retry => {
                                    "decision.weighted"
                                }
                                DecisionReason::Fallback => "decision.fallback",
                                DecisionReason::CircuitBreakerFallback => {
                                    "decision.breaker_fallback"
                                }
                            });
                            let (latency, cost_micros) = self
                                .services
                                .provider_stats
                                .expected(&work.request.tenant_id, &choice.provider_id);
                            // Only post-processors see the decision as a value; without
                            // them its metadata is built once, in `finish_decision`.
                            let post = work.pipeline.next_stage() == Some(Stage::Post);
                            let mut decision = reply::decision(
                                &choice,
                                &work.pipeline,
                                latency,
                                cost_micros,
                                post,
                            );
                            decision.policy_revision = Some(policy.revision.clone());
                            let value = if post {
                                serde_json::to_value(&decision).unwrap_or(Value::Null)
                            } else {
                                Value::Null
                            };
                            work.pipeline.selected(value);
                            decision.metadata.get_or_insert_with(Map::new);
                            work.decision = Some(decision);
                            work.extra = choice.extra;
                            if let Some((value, ttl_ms)) = &session {
                                self.share_session(&work.request.tenant_id, value, *ttl_ms, env);
                            }
                        }
                        Err(none) => {
                            env.probe("decision.no_provider");
                            let mut details = Map::new();
                            details.insert("steps".into(), none.steps.into());
                            let body = reply::error(
                                &work.request,
                                ErrorCode::DecisionFailed,
                                "no_provider_available",
                                "No provider available: weights failed and no fallback configured"
                                    .into(),
                                details,
                            );
                            self.finish_with_error(seq, msg, body, env);
                            return;
                        }
                    }
                }
                Step::Done => {
                    self.finish_decision(seq, msg, env);
                    return;
                }
                Step::Failed(error) => {
                    self.fail_pipeline(seq, msg, error, env);
                    return;
                }
            }
        }
    }

    fn fail_pipeline(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        error: super::extensions::PipelineError,
        env: &mut impl Env,
    ) {
        let Work::Deciding(work) = &msg.work else {
            return;
        };
        let body = reply::pipeline_error(
            &work.request,
            &error,
            &work.pipeline.executed,
            &work.policy_id,
            env.now(),
        );
        self.finish_with_error(seq, msg, body, env);
    }

    fn finish_with_error(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        body: Vec<u8>,
        env: &mut impl Env,
    ) {
        let Work::Deciding(work) = std::mem::replace(&mut msg.work, Work::Publishing) else {
            return;
        };
        let claim = work
            .request
            .idempotency_key
            .as_ref()
            .map(|k| (work.request.tenant_id.clone(), k.clone()));
        self.answer(seq, msg, work.reply_to, claim, body, None, false, env);
    }

    fn finish_decision(&mut self, seq: SeqKey, msg: &mut InFlight, env: &mut impl Env) {
        let Work::Deciding(work) = std::mem::replace(&mut msg.work, Work::Publishing) else {
            return;
        };
        let DecideWork {
            request,
            reply_to,
            inbound_headers,
            pipeline,
            decision,
            extra,
            ..
        } = *work;
        let Some(mut decision) = decision else {
            return;
        };
        // Post-processors may have enriched the context: the metadata is rebuilt from it.
        decision.metadata = Some(reply::metadata(
            &pipeline.context,
            &extra,
            &pipeline.executed,
        ));
        let body = reply::success(&request, &decision);
        let mut stored = None;
        if request.push_assignment {
            match self.config.assignment.gate(&request.tenant_id) {
                Ok(()) => {
                    let (a, headers) = assignment::build(
                        &self.config.assignment,
                        &request,
                        &decision,
                        &inbound_headers,
                        env,
                    );
                    let subject = request
                        .assignment_subject
                        .clone()
                        .unwrap_or_else(|| self.config.assignment.subject.clone());
                    match serde_json::to_vec(&a) {
                        Ok(payload) => {
                            stored = Some(StoredPublish {
                                subject,
                                headers,
                                payload,
                                msg_id: a.assignment_id,
                            })
                        }
                        // Never an empty assignment: skipped, as a gated one is.
                        Err(_) => self.stats.assignments_skipped += 1,
                    }
                }
                Err(_) => {
                    self.stats.assignments_skipped += 1;
                    env.probe("assignment.skipped");
                }
            }
        }
        let claim = request
            .idempotency_key
            .as_ref()
            .map(|k| (request.tenant_id.clone(), k.clone()));
        self.answer(seq, msg, reply_to, claim, body, stored, true, env);
    }

    /// The answer for `claim` is recorded: the messages that waited for it reply with
    /// the same bytes.
    fn release_claim(&mut self, seq: SeqKey, claim: &(String, String), env: &mut impl Env) {
        match self.flights.claims.get(claim) {
            Some((holder, _)) if *holder == seq => {}
            _ => return,
        }
        let Some((_, waiters)) = self.flights.claims.remove(claim) else {
            return;
        };
        if waiters.is_empty() {
            return; // The usual case: nobody waited, so no copy of the reply is needed.
        }
        let bytes = self
            .services
            .answers
            .reply_for_key(claim, env.now())
            .map(<[u8]>::to_vec);
        for waiter in waiters {
            let Some(w) = self.flights.messages.get_mut(&waiter) else {
                continue;
            };
            // A waiter found in any other state is left `Publishing`, and not resolved.
            let Work::AwaitingClaim { reply_to } = std::mem::replace(&mut w.work, Work::Publishing)
            else {
                continue;
            };
            match &bytes {
                Some(bytes) => {
                    self.stats.idempotent_replays += 1;
                    env.probe("claim.waiter_released");
                    let publish = outputs::core_publish(reply_to, Vec::new(), bytes.clone());
                    self.flights.send_held(waiter, publish, Purpose::Reply, env);
                }
                // Expired at once (a zero TTL): let the server bring it back.
                None => w.failed = true,
            }
            // Now, not after the flow returns: with no answer it is given back before
            // the holder's reply goes out (the order of commands, and so of ids).
            self.fates().maybe_resolve(waiter, env);
        }
    }

    /// The answer is decided. With a shared bucket and an idempotency key, claim it
    /// there first (`shared.rs`); otherwise record and publish it now.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        reply_to: String,
        claim: Option<(String, String)>,
        body: Vec<u8>,
        assignment: Option<StoredPublish>,
        ok: bool,
        env: &mut impl Env,
    ) {
        msg.work = Work::Publishing;
        if ok {
            self.stats.replies_ok += 1;
        } else {
            self.stats.replies_error += 1;
        }
        let answer = SharedAnswer {
            reply: body,
            assignment,
        };
        // An answer that cannot be encoded for the bucket (never, for what it holds)
        // is published unshared rather than claimed with an empty value.
        let shared_value = claim
            .as_ref()
            .filter(|_| self.config.shared_idempotency)
            .and_then(|_| answer.encode());
        match (claim, shared_value) {
            (Some(claim), Some(value)) => {
                let id = self.flights.next_id();
                self.flights.kv_claims.insert(id, seq);
                self.stats.shared_claims += 1;
                env.probe("shared.claim_sent");
                env.execute(Command::Kv {
                    id,
                    op: KvOp::Create {
                        key: shared::bucket_key(&claim.0, &claim.1),
                        value,
                    },
                });
                msg.work = Work::Claiming(Box::new(PendingAnswer {
                    reply_to,
                    claim,
                    answer,
                }));
            }
            (claim, _) => self.publish_answer(seq, msg, reply_to, claim, answer, env),
        }
    }

    /// Write the session's mapping, as this instance now holds it, to the shared bucket.
    /// Not awaited: a lost write only means another instance may pin the session anew.
    fn share_session(&mut self, tenant: &str, session: &str, ttl_ms: u64, env: &mut impl Env) {
        let now = env.now();
        let Some(provider) = self.services.sticky.get(tenant, session, now) else {
            return;
        };
        let Some(value) = (SharedSession {
            provider: provider.to_string(),
            expires_at_ms: now.after(ttl_ms).millis(),
        })
        .encode() else {
            return;
        };
        let key = shared::sticky_key(tenant, session);
        let id = self.flights.next_id();
        env.execute(Command::Kv {
            id,
            op: KvOp::Put { key, value },
        });
    }

    /// The shared bucket's answer about a sticky session: adopt a live mapping, then go
    /// on choosing. A missing entry or a failed read decides without it.
    fn sticky_found(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        outcome: KvOutcome,
        env: &mut impl Env,
    ) {
        let now = env.now();
        if let Work::Deciding(work) = &msg.work {
            let session = self
                .policies
                .get(&work.request.tenant_id, &work.policy_id)
                .and_then(|p| decider::session_of(p, &work.pipeline.context));
            let shared = match &outcome {
                KvOutcome::Found { value } => SharedSession::decode(value),
                _ => None,
            };
            if let (Some((value, _)), Some(s)) = (session, shared) {
                if s.expires_at_ms > now.millis() {
                    self.stats.shared_sessions_adopted += 1;
                    env.probe("shared.session_adopted");
                    let ttl = s.expires_at_ms - now.millis();
                    self.services.sticky.put(
                        &work.request.tenant_id,
                        &value,
                        &s.provider,
                        now,
                        ttl,
                    );
                }
            }
        }
        if matches!(outcome, KvOutcome::Failed { .. }) {
            self.stats.shared_failures += 1;
            env.probe("shared.failed");
        }
        self.step_decide(seq, msg, env);
    }

    /// A bucket operation's outcome: a sticky-session read (`sticky_found`), or a claim.
    /// For a claim, the bucket said whose answer the key has: publish that one. If it could
    /// not say, nothing is published and the server redelivers the message (a later
    /// delivery claims again and finds whatever this attempt may have stored).
    pub(super) fn on_kv_done(
        &mut self,
        id: u64,
        outcome: KvOutcome,
        env: &mut impl Env,
    ) -> Option<Advanced> {
        let advanced = |seq| Advanced {
            seq,
            keep_alive: true,
        };
        if let Some(seq) = self.flights.kv_lookups.remove(&id) {
            self.with_message(seq, |flow, msg| flow.sticky_found(seq, msg, outcome, env))?;
            return Some(advanced(seq));
        }
        // None for a session write's outcome: nothing waits for it.
        let seq = self.flights.kv_claims.remove(&id)?;
        let claimed =
            self.with_message(seq, |flow, msg| flow.claim_done(seq, msg, outcome, env))?;
        claimed.then(|| advanced(seq))
    }

    /// The bucket's verdict on this message's claim; false (and nothing done but its work
    /// set to `Publishing`) if the message was not claiming.
    fn claim_done(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        outcome: KvOutcome,
        env: &mut impl Env,
    ) -> bool {
        let Work::Claiming(pending) = std::mem::replace(&mut msg.work, Work::Publishing) else {
            return false;
        };
        let PendingAnswer {
            reply_to,
            claim,
            answer,
        } = *pending;
        let chosen = match outcome {
            KvOutcome::Created => Some(answer),
            // Whoever wrote it (another instance, or an earlier delivery of this message
            // whose claim timed out after all), the stored answer is the answer.
            KvOutcome::Exists { value } => match SharedAnswer::decode(&value) {
                Some(theirs) => {
                    self.stats.shared_adopted += 1;
                    env.probe("shared.answer_adopted");
                    self.stats.idempotent_replays += 1;
                    Some(theirs)
                }
                None => {
                    // Written by a version that does not share our format: answering
                    // ourselves beats refusing the key until the entry expires.
                    self.stats.shared_unreadable += 1;
                    env.probe("shared.unreadable");
                    Some(answer)
                }
            },
            // A create never answers `Found` or `Missing`; treat either like a failure.
            KvOutcome::Failed { .. }
            | KvOutcome::Found { .. }
            | KvOutcome::Missing
            | KvOutcome::Stored => {
                self.stats.shared_failures += 1;
                env.probe("shared.failed");
                msg.failed = true;
                None
            }
        };
        match chosen {
            Some(answer) => {
                self.publish_answer(seq, msg, reply_to, Some(claim), answer, env);
            }
            // Waiters for this key have no answer either: they are given back too.
            None => self.release_claim(seq, &claim, env),
        }
        true
    }

    /// Record the answer (before publishing: whatever happens to the publish, this is
    /// the answer), then publish the reply and the assignment.
    fn publish_answer(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        reply_to: String,
        claim: Option<(String, String)>,
        answer: SharedAnswer,
        env: &mut impl Env,
    ) {
        let SharedAnswer {
            reply: body,
            assignment,
        } = answer;
        self.services.answers.record_reply(
            seq.1,
            claim.clone(),
            &body,
            assignment.clone(),
            env.now(),
        );
        if let Some(claim) = claim {
            self.release_claim(seq, &claim, env);
        }
        self.flights.send(
            seq,
            msg,
            outputs::core_publish(reply_to, Vec::new(), body),
            Purpose::Reply,
            env,
        );
        if let Some(a) = assignment {
            let publish = outputs::publish_stored(a);
            self.flights
                .send(seq, msg, publish, Purpose::Assignment, env);
        }
    }
}

/// The extension breakers, as the pipeline sees them.
struct Gate<'a> {
    breakers: &'a mut Breakers,
    config: &'a super::breaker::BreakerConfig,
    now: Time,
}

impl ExtensionGate for Gate<'_> {
    fn allow(&mut self, extension_id: &str) -> bool {
        !matches!(
            self.breakers.admit("", extension_id, self.now, self.config),
            super::breaker::Admission::Denied { .. }
        )
    }

    fn record(&mut self, extension_id: &str, success: bool) {
        let outcome = if success {
            super::breaker::CallOutcome::Success
        } else {
            super::breaker::CallOutcome::Failure
        };
        self.breakers
            .record("", extension_id, self.now, outcome, None, self.config);
    }
}

fn pipeline_items(policy: &Policy) -> Vec<PipelineItem> {
    let processor = |stage, i: &crate::policy::ProcessorItem| PipelineItem {
        stage,
        id: i.id.clone(),
        on_failure: match i.mode {
            ExtensionMode::Required => OnFailure::Abort,
            ExtensionMode::Optional => OnFailure::Warn,
        },
        when: i.when.clone(),
        config: i.config.clone(),
    };
    let pre = policy.pre.iter().map(|i| processor(Stage::Pre, i));
    let validators = policy.validators.iter().map(|v| PipelineItem {
        stage: Stage::Validator,
        id: v.id.clone(),
        on_failure: match v.on_fail {
            OnFail::Block => OnFailure::Abort,
            OnFail::Warn => OnFailure::Warn,
            OnFail::Ignore => OnFailure::Ignore,
        },
        when: v.when.clone(),
        config: v.config.clone(),
    });
    let post = policy.post.iter().map(|i| processor(Stage::Post, i));
    pre.chain(validators).chain(post).collect()
}

/// A context `deadline` (epoch milliseconds) that has passed.
fn deadline_passed(context: &Map<String, Value>, now: Time) -> bool {
    context
        .get("deadline")
        .and_then(Value::as_u64)
        .is_some_and(|deadline| now.millis() > deadline)
}
