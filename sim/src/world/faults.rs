//! Scheduled faults, connections, and the heal at the end of the chaos phase.
//!
//! A client's connection is up when its own outage is over, its process is alive and
//! the server is up; `try_reconnect` is called whenever one of those may have changed.
//! A client notices a drop after a detection delay (or at the latest on reconnect); the
//! server notices at once or not at all (half-open: it goes on delivering into the
//! client's pulls, and those deliveries are lost but counted).

use serde_json::json;

use super::{Event, World, LIVENESS_TICK_MS};
use crate::actors::ActorTimer;
use crate::faults::FaultKind;
use crate::net::NodeId;
use crate::topology::Role;
use crate::wire::Cons;

impl World {
    pub(super) fn apply_fault(&mut self, index: usize) {
        if self.chaos_over {
            return;
        }
        let Some(fault) = self.schedule.entries.get(index).cloned() else {
            return;
        };
        self.count_fault();
        self.trace.record(
            self.now,
            "fault",
            "world",
            &json!({"index": index, "fault": fault.kind}),
        );
        self.observe_fault(&fault.kind);
        match fault.kind {
            FaultKind::LinkDrop {
                node,
                down_ms,
                detect_ms,
                server_notices,
            } => self.drop_link(node, down_ms, detect_ms, server_notices),
            FaultKind::Partition { a, b, ms } => self.net.add_partition(a, b, self.now + ms),
            FaultKind::Spike { node, ms, extra_ms } => {
                self.net.add_spike(node, self.now + ms, extra_ms)
            }
            FaultKind::Storm { cons } => {
                let n = self
                    .js
                    .consumer_mut(cons.durable())
                    .map_or(0, |c| c.storm());
                self.trace.record(
                    self.now,
                    "fault.storm",
                    "nats",
                    &json!({"cons": cons, "redelivering": n}),
                );
                self.dispatch(cons);
            }
            FaultKind::Burst { gateway, count } => {
                let added = self.workload.add_burst(gateway, count, self.now);
                let node = self.topo.gateway(gateway);
                for request in added {
                    let at = self.workload.request(request).publish_at;
                    self.timer(node, at, crate::actors::ActorTimer::GwStart { request });
                }
            }
            FaultKind::Crash {
                router,
                down_ms,
                server_notices,
            } => self.crash_router(router, down_ms, server_notices),
            FaultKind::Stop {
                router,
                grace_ms,
                down_ms,
            } => self.stop_router(router, grace_ms, down_ms),
            FaultKind::BrokerRestart { down_ms } => self.broker_restart(down_ms),
            FaultKind::SkewJump { router, delta_ms } => {
                self.routers[router].clock_offset += delta_ms;
                let offset = self.routers[router].clock_offset;
                if let Some(h) = self.routers[router].host.as_mut() {
                    h.clock_offset = offset;
                }
                self.rearm_timers(router);
            }
            FaultKind::LeaderMove {
                cons,
                advisory,
                elect_ms,
            } => self.leader_move(cons, advisory, elect_ms),
            FaultKind::NodeCrash {
                target,
                down_ms,
                elect_ms,
            } => self.node_crash(target, down_ms, elect_ms),
        }
    }

    /// The consumer's leader moves: its waiting pull requests are lost. Each router
    /// process hears of it by the advisory (if sent and its client is connected) or by
    /// the silence of its pull, as the production client would.
    fn leader_move(&mut self, cons: Cons, advisory: bool, elect_ms: u64) {
        let lost = self.js.consumer_mut(cons.durable()).map_or(0, |c| {
            let n = c.waiting_pulls();
            c.drop_pulls();
            n
        });
        self.trace.record(
            self.now,
            "fault.leader-move",
            "nats",
            &json!({"cons": cons, "pulls_lost": lost, "advisory": advisory}),
        );
        self.router_pulls_lost(cons, advisory.then_some(elect_ms));
    }

    /// Every router's pull on `cons` was lost at the server: each hears its silence two
    /// idle heartbeats later (unless it pulled again since), and, with `elected_in`, the
    /// new leader's LEADER_ELECTED advisory that long after if it is connected.
    pub(super) fn router_pulls_lost(&mut self, cons: Cons, elected_in: Option<u64>) {
        for r in 0..self.routers.len() {
            let node = self.topo.router(r);
            let Some(current) = self.routers[r]
                .host
                .as_mut()
                .and_then(|h| h.puller(cons))
                .map(|p| p.current())
            else {
                continue;
            };
            if let (Some(ms), true) = (elected_in, self.nodes[node].connected) {
                self.timer(node, self.now + ms, ActorTimer::LeaderElected { cons });
            }
            let silent_at = self.now + 2 * crate::host::PULL_HEARTBEAT_MS;
            self.timer(
                node,
                silent_at,
                ActorTimer::PullSilent {
                    cons,
                    pull: current,
                },
            );
        }
    }

    pub(super) fn drop_link(
        &mut self,
        node: NodeId,
        down_ms: u64,
        detect_ms: u64,
        server_notices: bool,
    ) {
        self.nodes[node].down_until = self.nodes[node].down_until.max(self.now + down_ms);
        // The drop's end is scheduled even when the link is down already: a drop that
        // lands during a broker restart pushes `down_until` past the restart's own
        // `LinkUp`s, and nothing else would bring the node back (seed 7013 of
        // `soak_link_faults_hours`: a gateway silent for 40 minutes, until the next
        // restart). A `LinkUp` for a link already up is a no-op.
        self.schedule_at(self.now + down_ms, Event::LinkUp { node });
        if !self.net.is_up(node) {
            return;
        }
        self.net.drop_connection(node);
        if server_notices {
            self.server_forgets(node);
        }
        let epoch = self.net.epoch(node);
        self.schedule_at(self.now + detect_ms, Event::ClientNotices { node, epoch });
    }

    /// The server noticed `node` is gone: its subscriptions and pull requests go.
    pub(super) fn server_forgets(&mut self, node: NodeId) {
        self.nodes[node].server_knows_down = true;
        let owner = &self.pull_owner;
        let durables: Vec<String> = self.js.durables().map(str::to_string).collect();
        for durable in durables {
            if let Some(c) = self.js.consumer_mut(&durable) {
                c.drop_pulls_of(|pull| owner.get(&pull).is_some_and(|&(n, _)| n == node));
            }
        }
    }

    pub(super) fn client_notices(&mut self, node: NodeId, epoch: u64) {
        if epoch != self.net.epoch(node) || self.net.is_up(node) || !self.nodes[node].connected {
            return;
        }
        self.nodes[node].connected = false;
        if let Role::Router(r) = self.topo.role(node) {
            self.router_connection(r, false);
        }
    }

    /// Bring `node`'s connection up if nothing keeps it down any more.
    pub(super) fn try_reconnect(&mut self, node: NodeId) {
        let n = &self.nodes[node];
        let blocked = !n.alive || !self.broker_up || (n.down_until > self.now && !self.chaos_over);
        if blocked || (self.net.is_up(node) && n.connected) {
            return;
        }
        if !self.net.is_up(node) || !n.connected {
            self.net.reconnect(node);
        }
        self.nodes[node].server_knows_down = false;
        self.trace.record(
            self.now,
            "net.connect",
            self.topo.name(node),
            &json!({"epoch": self.net.epoch(node)}),
        );
        self.nodes[node].connected = true;
        match self.topo.role(node) {
            Role::Router(r) => self.router_connection(r, true),
            _ => self.client_connected(node),
        }
    }

    /// A client other than a router comes up for the first time.
    pub(super) fn connect_client(&mut self, node: NodeId) {
        self.try_reconnect(node);
    }

    fn broker_restart(&mut self, down_ms: u64) {
        if !self.broker_up {
            return;
        }
        self.broker_up = false;
        self.counters.broker_restarts += 1;
        let durables: Vec<String> = self.js.durables().map(str::to_string).collect();
        for durable in durables {
            if let Some(c) = self.js.consumer_mut(&durable) {
                c.drop_pulls();
            }
        }
        if self.profile.faults.tail_loss {
            self.lose_unsynced_tail();
        }
        let detect_max = self.profile.faults.detect_max_ms;
        for node in self.topo.nodes() {
            if self.net.is_up(node) {
                self.net.drop_connection(node);
                let detect = self.faults_rng.between(0, detect_max);
                let epoch = self.net.epoch(node);
                self.schedule_at(self.now + detect, Event::ClientNotices { node, epoch });
            }
            self.nodes[node].server_knows_down = true;
        }
        self.schedule_at(self.now + down_ms, Event::BrokerUp);
    }

    /// The writes of the last `sync_interval_ms` are lost (a crash of every replica
    /// before it synced): stored messages, dedupe entries, acks and terms.
    pub(super) fn lose_unsynced_tail(&mut self) {
        let since = self
            .now
            .saturating_sub(self.profile.faults.sync_interval_ms);
        let lost = self.js.lose_tail(since);
        let kv_lost = self.kv.lose_tail(since);
        self.trace.record(
            self.now,
            "fault.tail-lost",
            "nats",
            &json!({"since": since, "lost": lost, "kv_lost": kv_lost}),
        );
        for (stream, seqs) in &lost {
            self.checker.on_tail_lost(stream, seqs);
        }
        self.checker.mark_tail_affected();
        // Acks and terms taken back, sequences freed: the server is no longer done
        // with those.
        for cons in crate::wire::Cons::ALL {
            if let (Some(c), Some(finals)) =
                (self.js.consumer(cons.durable()), self.finals.get_mut(&cons))
            {
                finals.retain(|&seq| c.is_final(seq));
            }
        }
    }

    pub(super) fn broker_back(&mut self) {
        if self.broker_up {
            return;
        }
        self.broker_up = true;
        self.trace.record(self.now, "nats.up", "nats", &json!({}));
        // Clients reconnect on their own backoff (async-nats: up to 4 s between tries).
        for node in self.topo.nodes() {
            let delay = self.faults_rng.between(0, 1_000);
            self.schedule_at(self.now + delay, Event::LinkUp { node });
        }
        for cons in crate::wire::Cons::ALL {
            self.dispatch(cons);
        }
    }

    /// The chaos phase is over: every fault heals.
    pub(super) fn end_chaos(&mut self) {
        self.chaos_over = true;
        self.trace
            .record(self.now, "world.chaos-end", "world", &json!({}));
        self.observe_heal();
        self.net.heal();
        self.heal_cluster();
        for e in &mut self.exts {
            e.heal();
        }
        if !self.broker_up {
            self.broker_up = true;
            self.trace.record(self.now, "nats.up", "nats", &json!({}));
        }
        for r in 0..self.topo.routers() {
            if !self.nodes[self.topo.router(r)].alive {
                self.restart_router(r);
            }
        }
        for node in self.topo.nodes() {
            self.nodes[node].down_until = self.now;
            self.try_reconnect(node);
        }
        for cons in crate::wire::Cons::ALL {
            self.dispatch(cons);
        }
        self.schedule_at(self.now + LIVENESS_TICK_MS, Event::LivenessTick);
    }
}
