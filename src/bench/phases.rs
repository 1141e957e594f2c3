//! The measured phases. A saturation phase keeps `outstanding` requests in flight (closed
//! loop) and counts what completes after the warm-up; a fixed-load phase sends at a given
//! rate (open loop, paced) and takes each latency from the request's *intended* send time,
//! so that a stalled generator cannot hide a stall of the system (no coordinated omission).
//! Both charge CPU per request over the measured window.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::paths::Target;
use super::resources::{cpu_per_request, CpuPerRequest, CpuSample, Pids};
use super::{BenchOptions, DRAIN_TIMEOUT, RAW_ATTEMPTS, STALL_AFTER};

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(super) struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Quantiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct SaturationResult {
    pub path: &'static str,
    pub outstanding: usize,
    pub completed: u64,
    pub secs: f64,
    pub throughput: f64,
    /// Closed-loop latency: queueing behind `outstanding` requests, not a service level.
    pub latency: Quantiles,
    pub cpu: CpuPerRequest,
    pub lost: u64,
    /// Nothing completed for `STALL_AFTER` with requests in flight: the phase was cut short.
    pub stalled: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct LevelResult {
    pub path: &'static str,
    pub fraction: f64,
    pub offered: f64,
    pub achieved: f64,
    pub measured: u64,
    pub latency: Quantiles,
    /// How late the generator itself sent (included in `latency`).
    pub send_lateness_p99_ms: f64,
    pub cpu: CpuPerRequest,
    pub lost: u64,
}

/// Next global sequence number: phases never reuse one, so a late completion of an
/// earlier phase is recognised (below the phase's first sequence) and ignored.
pub(super) struct Sequencer(pub u64);

impl Sequencer {
    pub fn take(&mut self) -> u64 {
        let seq = self.0;
        self.0 += 1;
        seq
    }
}

pub(super) async fn saturation(
    target: &mut Target,
    seqs: &mut Sequencer,
    pids: Pids,
    outstanding: usize,
    warmup: Duration,
    duration: Duration,
) -> SaturationResult {
    let first = seqs.0;
    let mut sent_at: Vec<Option<Instant>> = Vec::new();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut in_flight = 0usize;
    let mut completed = 0u64;
    let mut hist = new_histogram();
    let mut before: Option<CpuSample> = None;
    let mut after = CpuSample::default();
    let mut send = |target: &Target, sent_at: &mut Vec<Option<Instant>>| {
        let seq = seqs.take();
        sent_at.push(Some(Instant::now()));
        target.send(seq);
    };
    for _ in 0..outstanding {
        send(target, &mut sent_at);
        in_flight += 1;
    }
    let warm_sleep = tokio::time::sleep_until(measure_from);
    let end_sleep = tokio::time::sleep_until(end);
    tokio::pin!(warm_sleep, end_sleep);
    let mut sending = true;
    let mut stalled = false;
    loop {
        tokio::select! {
            biased;
            () = &mut warm_sleep, if before.is_none() => before = Some(pids.sample()),
            () = &mut end_sleep, if sending => {
                after = pids.sample();
                sending = false;
                if in_flight == 0 { break; }
            }
            done = target.done.recv() => {
                let Some((seq, at)) = done else { break };
                let Some(slot) = seq.checked_sub(first).and_then(|i| sent_at.get_mut(i as usize)) else {
                    continue;
                };
                let Some(sent) = slot.take() else { continue };
                in_flight -= 1;
                if sending && before.is_some() {
                    completed += 1;
                    let _ = hist.record((at - sent).as_micros().max(1) as u64);
                }
                if sending {
                    send(target, &mut sent_at);
                    in_flight += 1;
                } else if in_flight == 0 {
                    break;
                }
            }
            () = tokio::time::sleep(DRAIN_TIMEOUT), if !sending => break,
            () = tokio::time::sleep(STALL_AFTER), if sending => {
                stalled = true;
                break;
            }
        }
    }
    let secs = duration.as_secs_f64();
    SaturationResult {
        path: target.path.name(),
        outstanding,
        completed,
        secs,
        throughput: completed as f64 / secs,
        latency: quantiles(&hist),
        cpu: cpu_per_request(before.unwrap_or_default(), after, completed),
        lost: in_flight as u64,
        stalled,
    }
}

pub(super) async fn fixed_load(
    target: &mut Target,
    seqs: &mut Sequencer,
    pids: Pids,
    fraction: f64,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> LevelResult {
    let first = seqs.0;
    let total = ((warmup + duration).as_secs_f64() * rate).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(5);
    let intended = |i: u64| start + interval.mul_f64(i as f64);
    let measure_from = start + warmup;
    let mut sent = vec![false; total as usize];
    let mut answered = vec![false; total as usize];
    let mut next = 0u64;
    let mut measured = 0u64;
    let mut hist = new_histogram();
    let mut lateness = new_histogram();
    let mut before: Option<CpuSample> = None;
    let mut last_answer = start;
    let mut outstanding = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if before.is_none() && now >= measure_from {
            before = Some(pids.sample());
        }
        while next < total && intended(next) <= now {
            let seq = seqs.take();
            debug_assert_eq!(seq, first + next);
            target.send(seq);
            sent[next as usize] = true;
            if intended(next) >= measure_from {
                let _ = lateness.record((now - intended(next)).as_micros().max(1) as u64);
            }
            next += 1;
            outstanding += 1;
        }
        if next == total && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
        if next == total && outstanding == 0 {
            break;
        }
        let wake = if next < total {
            intended(next)
        } else {
            drain_deadline.unwrap_or(now)
        };
        tokio::select! {
            biased;
            done = target.done.recv() => {
                let Some((seq, at)) = done else { break };
                let Some(i) = seq.checked_sub(first).filter(|i| *i < total) else { continue };
                if !sent[i as usize] || answered[i as usize] {
                    continue;
                }
                answered[i as usize] = true;
                outstanding -= 1;
                last_answer = at;
                let planned = intended(i);
                if planned >= measure_from {
                    measured += 1;
                    let _ = hist.record((at - planned).as_micros().max(1) as u64);
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if next == total && Instant::now() >= wake {
                    break;
                }
            }
        }
    }
    let after = pids.sample();
    let window = (last_answer.max(measure_from) - measure_from)
        .as_secs_f64()
        .max(1e-3);
    LevelResult {
        path: target.path.name(),
        fraction,
        offered: rate,
        achieved: measured as f64 / window,
        measured,
        latency: quantiles(&hist),
        send_lateness_p99_ms: lateness.value_at_quantile(0.99) as f64 / 1000.0,
        cpu: cpu_per_request(before.unwrap_or_default(), after, measured),
        lost: outstanding,
    }
}

/// The raw path's saturation phase, measured again (after pulling afresh) while it
/// stalls, at most `RAW_ATTEMPTS` times; returns the result and how often it stalled.
pub(super) async fn raw_saturation(
    raw: &mut Target,
    seqs: &mut Sequencer,
    pids: Pids,
    opts: &BenchOptions,
) -> (SaturationResult, u32) {
    let mut raw_stalls = 0;
    let result = loop {
        eprintln!("bench: raw saturation");
        let result = saturation(
            raw,
            seqs,
            pids,
            opts.outstanding,
            opts.warmup,
            opts.saturation,
        )
        .await;
        if !result.stalled || raw_stalls + 1 >= RAW_ATTEMPTS {
            break result;
        }
        raw_stalls += 1;
        if let Some(consumer) = &mut raw.consumer {
            if let Ok(info) = consumer.info().await {
                eprintln!(
                    "bench: raw consumer at the stall: ack pending {}, pending {}, waiting pulls {}, \
                     delivered stream seq {}, ack floor stream seq {}, redelivered {}",
                    info.num_ack_pending,
                    info.num_pending,
                    info.num_waiting,
                    info.delivered.stream_sequence,
                    info.ack_floor.stream_sequence,
                    info.num_redelivered
                );
            }
        }
        eprintln!("bench: the raw pull stalled; pulling afresh and measuring again");
        if let Some(repull) = &raw.repull {
            let _ = repull.send(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    (result, raw_stalls)
}
