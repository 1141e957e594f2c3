//! An operator polling the router's admin API (`beamline.router.v1.admin.*`) with the
//! right token, a wrong one, or none: the answers must say `ok` exactly when the token
//! was right.

use std::collections::BTreeMap;

use beamline_router::contracts::subjects::ADMIN_PREFIX;
use serde::Serialize;
use serde_json::json;

use super::{ActorTimer, Ids, Out};
use crate::rng::SimRng;
use crate::wire::Up;

/// The token the world's routers are configured with.
pub const ADMIN_TOKEN: &str = "sim-admin-token";
const TIMEOUT_MS: u64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Auth {
    Right,
    Wrong,
    Missing,
}

#[derive(Debug)]
pub struct Ops {
    pub ids: Ids,
    rng: SimRng,
    /// request id -> (operation, auth)
    open: BTreeMap<u64, (&'static str, Auth)>,
    every_ms: u64,
}

impl Ops {
    /// `every_ms`: the scenario's interval; drawn otherwise (drawn either way, so that a
    /// set interval leaves the rest of the stream as it was).
    pub fn new(node: usize, rng: SimRng, every_ms: Option<u64>) -> Self {
        let mut rng = rng;
        let drawn = rng.between(3_000, 20_000);
        let every_ms = every_ms.unwrap_or(drawn).max(1);
        Ops {
            ids: Ids::new(node),
            rng,
            open: BTreeMap::new(),
            every_ms,
        }
    }

    pub fn start(&mut self, now: u64, out: &mut Out) {
        out.timer(now + self.rng.below(self.every_ms), ActorTimer::OpsTick);
    }

    pub fn tick(&mut self, now: u64, out: &mut Out) {
        let op = *self.rng.pick(&[
            "get_stats",
            "get_circuit_breaker_states",
            "get_backpressure_status",
            "get_extension_health",
            "dry_run",
        ]);
        let auth = *self
            .rng
            .pick(&[Auth::Right, Auth::Right, Auth::Wrong, Auth::Missing]);
        let mut body = json!({"tenant_id": "acme"});
        let mut headers = Vec::new();
        match auth {
            Auth::Right => {
                headers.push(("authorization".to_string(), format!("Bearer {ADMIN_TOKEN}")))
            }
            Auth::Wrong => body["token"] = "guess".into(),
            Auth::Missing => {}
        }
        let id = self.ids.fresh();
        self.open.insert(id, (op, auth));
        out.send(Up::Request {
            id,
            subject: format!("{ADMIN_PREFIX}{op}"),
            headers,
            payload: body.to_string().into_bytes(),
        });
        out.timer(now + TIMEOUT_MS, ActorTimer::RequestGiveUp { id });
        out.timer(now + self.every_ms, ActorTimer::OpsTick);
    }

    /// The answer to (or the end of) request `id`: what it asked, if it was still open.
    pub fn done(&mut self, id: u64) -> Option<(&'static str, Auth)> {
        self.open.remove(&id)
    }
}
