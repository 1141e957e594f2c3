//! The liveness phase: every second, check each stored message of every consumer
//! against its deadline, and end the run as soon as the world is quiet (every message
//! final, every gateway done, every router process holding nothing, every CAF worker
//! idle).

use serde_json::json;

use super::{Event, World, LIVENESS_TICK_MS};
use crate::invariants::{Finality, StuckInfo};
use crate::jetstream::MessageState;
use crate::wire::Cons;

impl World {
    fn state_of(&self, cons: Cons, seq: u64) -> MessageState {
        self.js
            .consumer(cons.durable())
            .map_or(MessageState::Undelivered, |c| c.state(seq))
    }

    /// The first message not yet final, with why, and whether it is past its deadline.
    fn first_open(&self) -> Option<(StuckInfo, &'static str, String, bool)> {
        let mut first: Option<(StuckInfo, &'static str, String, bool)> = None;
        for cons in Cons::ALL {
            let Some(stream) = self.js.stream(cons.stream()) else {
                continue;
            };
            for m in stream.messages() {
                let state = self.state_of(cons, m.seq);
                if let Finality::Open(invariant, why) =
                    self.checker.finality(cons, m.seq, state, &self.workload)
                {
                    let deadline = self.checker.deadline(m.stored_at, self.bound_ms);
                    let late = self.now > deadline;
                    let info = StuckInfo {
                        cons,
                        seq: m.seq,
                        state,
                        stored_at: m.stored_at,
                        deadline,
                    };
                    if late {
                        return Some((info, invariant, why, true));
                    }
                    if first.is_none() {
                        first = Some((info, invariant, why, false));
                    }
                }
            }
        }
        first
    }

    pub(super) fn liveness_tick(&mut self) {
        let open = self.first_open();
        let first_open = open.as_ref().map(|(i, inv, _, late)| {
            json!({"cons": i.cons, "seq": i.seq, "state": i.state, "deadline": i.deadline, "would_break": inv, "late": late})
        });
        self.trace.record(
            self.now,
            "check.liveness",
            "world",
            &json!({"first_open": first_open}),
        );
        if let Some((info, invariant, why, true)) = &open {
            self.checker
                .stuck(self.now, invariant, why, info, &self.workload);
            return;
        }
        // INV-09: no router process holds a message forever.
        let holding: Vec<(usize, usize)> = self
            .routers
            .iter()
            .enumerate()
            .filter_map(|(r, p)| p.host.as_ref().map(|h| (r, h.router().in_flight())))
            .filter(|&(_, n)| n > 0)
            .collect();
        // (A scenario may end the chaos phase before the workload: new traffic keeps a
        // process busy until the workload is over, so the bound runs from the later.)
        let heal_deadline = self.profile.chaos_ms.max(self.profile.workload_ms) + self.bound_ms;
        if let (Some(&(r, n)), true) = (holding.first(), self.now > heal_deadline) {
            self.checker.fail(
                self.now,
                "eternal_in_flight",
                format!(
                    "router-{} still holds {n} messages in flight {}ms after the heal",
                    r + 1,
                    self.now - self.profile.chaos_ms
                ),
            );
            return;
        }
        let cafs_busy = self.cafs.iter().any(|c| c.busy() > 0);
        if open.is_none() && holding.is_empty() && self.workload.quiet() && !cafs_busy {
            self.quiet_end();
            return;
        }
        self.schedule_at(self.now + LIVENESS_TICK_MS, Event::LivenessTick);
    }

    /// The world is quiet: the end-of-run rules, then stop.
    fn quiet_end(&mut self) {
        let js = &self.js;
        let state_of = |cons: Cons, seq: u64| {
            js.consumer(cons.durable())
                .map_or(MessageState::Undelivered, |c| c.state(seq))
        };
        self.checker.finish(self.now, state_of);
        self.checker.finish_models(self.now);
        self.checker.finish_history(self.now);
        self.trace.record(
            self.now,
            "world.quiet",
            "world",
            &json!({"after_heal_ms": self.now - self.profile.chaos_ms}),
        );
        self.ended = true;
    }

    /// The hard end of the run came before the world went quiet.
    pub(super) fn hard_end(&mut self) {
        if let Some((info, invariant, why, _)) = self.first_open() {
            self.checker
                .stuck(self.now, invariant, &why, &info, &self.workload);
        } else {
            let (n, first) = self.workload.working();
            let detail =
                first.map_or_else(String::new, |i| self.workload.request(i).request_id.clone());
            self.checker.fail(
                self.now,
                "stuck",
                format!("the world never went quiet: {n} gateway requests still waiting (first {detail})"),
            );
        }
        self.ended = true;
    }
}
