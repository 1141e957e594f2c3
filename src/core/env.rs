//! The three interfaces through which the core touches the world: a clock, an entropy
//! source and a broker sink. The production shell implements them over tokio and
//! async-nats; the simulator over a virtual clock, one seeded ChaCha RNG and a simulated
//! JetStream. The core never reaches past them.

use serde::Serialize;

use super::io::Command;

/// A point in time, in milliseconds. Production uses milliseconds since the Unix epoch;
/// the simulator uses a virtual epoch. The core only compares and adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Time(pub u64);

impl Time {
    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn after(self, delay_ms: u64) -> Time {
        Time(self.0.saturating_add(delay_ms))
    }
}

/// The current time. The core asks once per input and never sleeps.
pub trait Clock {
    fn now(&self) -> Time;
}

/// Randomness. In the simulator this is the seeded ChaCha stream; in production the OS.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;

    /// A uniform draw in `0..bound` (bound > 0) without modulo bias worth speaking of:
    /// Lemire's multiply-shift. Written here, not borrowed from `rand`, so that the value
    /// stream cannot change under us with a dependency upgrade.
    fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Where the core's commands go. The shell executes them and later reports their
/// outcomes as inputs (`Input::PublishDone`, `Input::KvDone`, ...).
pub trait Broker {
    fn execute(&mut self, command: Command);
}

/// FoundationDB-style fault points. Production always answers `false`; the simulator
/// activates each site for a whole run with some probability, then fires it sometimes.
pub trait Buggify {
    fn buggify(&mut self, _site: &'static str) -> bool {
        false
    }

    /// Whether the planted bug `bug` is on: a deliberate mutation at one line of the
    /// core, so that the simulator can show that a checker catches it (its `--bug`
    /// option; docs/INVARIANTS.md names the checker of each). Production, and every
    /// simulated run without that option, answers `false`.
    fn planted(&self, _bug: &'static str) -> bool {
        false
    }
}

/// Coverage probes, FoundationDB's `CODE_PROBE` / Antithesis' "sometimes": the core and
/// the host name the rare paths they take (`super::probes::PROBES` lists every name).
/// Production ignores them; the simulator counts them per run, and a sweep reports which
/// share of its seeds reached each path, so that a change to the world cannot silently
/// stop exercising one. A probe never changes what the caller does.
pub trait Probe {
    fn probe(&mut self, _name: &'static str) {}
}

/// Everything the core needs from its host, in one bound.
pub trait Env: Clock + Entropy + Broker + Buggify + Probe {}
impl<T: Clock + Entropy + Broker + Buggify + Probe> Env for T {}

/// An `Env` that records commands into a vector: handy for tests and for shells that
/// prefer to drain commands after each input.
#[derive(Debug)]
pub struct RecordingEnv<E> {
    pub now: Time,
    pub entropy: E,
    pub commands: Vec<Command>,
}

impl<E: FnMut() -> u64> RecordingEnv<E> {
    pub fn new(now: Time, entropy: E) -> Self {
        RecordingEnv {
            now,
            entropy,
            commands: Vec::new(),
        }
    }

    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}

impl<E> Clock for RecordingEnv<E> {
    fn now(&self) -> Time {
        self.now
    }
}

impl<E: FnMut() -> u64> Entropy for RecordingEnv<E> {
    fn next_u64(&mut self) -> u64 {
        (self.entropy)()
    }
}

impl<E> Broker for RecordingEnv<E> {
    fn execute(&mut self, command: Command) {
        self.commands.push(command);
    }
}

impl<E> Buggify for RecordingEnv<E> {}
impl<E> Probe for RecordingEnv<E> {}
