//! The connection fault: the router's connection drops at random times during the chaos
//! phase and comes back after a random outage. The client notices a drop late (or at
//! reconnect); the server may or may not notice at all (a half-open connection).

use beamline_router::core::{ConnectionEvent, Input};
use serde_json::json;

use super::{Event, World, DURABLE};

impl World {
    pub(super) fn schedule_next_drop(&mut self) {
        if self.chaos_over || !self.faults().link_drops {
            return;
        }
        let mean = self.faults().mean_uptime_ms.max(1);
        let uptime = self.faults_rng.between(1, 2 * mean);
        self.schedule(self.now + uptime, Event::LinkDown);
    }

    pub(super) fn on_link_down(&mut self) {
        if self.chaos_over || !self.link.is_up() {
            return;
        }
        self.link.drop_connection();
        self.counters.faults += 1;
        let notices = self
            .faults_rng
            .chance(self.faults().server_notices_permille);
        if notices {
            if let Some(c) = self.js.consumer_mut(DURABLE) {
                c.drop_pulls();
            }
        }
        let f = self.faults().clone();
        let detect = self.faults_rng.between(0, f.detect_max_ms);
        let down = self
            .faults_rng
            .between(f.down_min_ms, f.down_max_ms.max(f.down_min_ms));
        self.trace.record_json(
            self.now,
            "fault.link-down",
            &json!({ "epoch": self.link.epoch(), "server_notices": notices, "detect_ms": detect, "down_ms": down }),
        );
        self.schedule(
            self.now + detect,
            Event::ClientNotices {
                epoch: self.link.epoch(),
            },
        );
        self.schedule(self.now + down, Event::LinkUp);
    }

    pub(super) fn on_link_up(&mut self) {
        if self.link.is_up() {
            return;
        }
        self.link.reconnect();
        self.trace.record_json(
            self.now,
            "fault.link-up",
            &json!({ "epoch": self.link.epoch() }),
        );
        // The client learns of the old connection's end at the latest when it reconnects.
        if self.host.connected() {
            self.feed(Input::Connection(ConnectionEvent::Down));
        }
        self.feed(Input::Connection(ConnectionEvent::Up));
        self.issue_pull();
        self.schedule_next_drop();
    }
}
