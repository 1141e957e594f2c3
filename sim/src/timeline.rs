//! A picture of a run: a self-contained HTML page (inline SVG and CSS, no external
//! assets) with one lane per actor and the server in the middle, messages as arrows from
//! sender to receiver (lost ones dashed, ending in a cross), faults as shaded spans or
//! markers, the core's fates (ack, nak, term) as dots, liveness checks as ticks on the
//! time axis, and the first violation as a red line with its message. Hovering anything
//! shows its trace line (SVG `<title>`).
//!
//! When the run failed about one message, everything about that message is drawn bold
//! and the rest faded, so the story of the failing request stands out of thousands of
//! arrows. Built from the trace lines alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// What to draw.
#[derive(Clone, Debug, Default)]
pub struct TimelineOptions {
    /// Only this window of virtual time, in ms (`None`: the whole run).
    pub window: Option<(u64, u64)>,
    /// Highlight this stream sequence (default: the violation's).
    pub focus_seq: Option<u64>,
    pub title: String,
}

const LANE_H: f64 = 46.0;
const TOP: f64 = 70.0;
const LEFT: f64 = 150.0;

struct Scale {
    from: u64,
    to: u64,
    px_per_ms: f64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        LEFT + (t.clamp(self.from, self.to) - self.from) as f64 * self.px_per_ms
    }

    fn visible(&self, a: u64, b: u64) -> bool {
        b >= self.from && a <= self.to
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Render the timeline of a run from its trace lines.
pub fn render(lines: &[String], options: &TimelineOptions) -> String {
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let end = events
        .iter()
        .map(|v| v["t"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1);
    // Lanes: gateways and the operator, routers, the server, then the rest.
    let topology: Vec<String> = events
        .iter()
        .find(|e| e["k"] == "world.topology")
        .and_then(|e| e["v"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let rank = |n: &str| -> u8 {
        match n {
            n if n.starts_with("gw-") => 0,
            "ops" => 1,
            n if n.starts_with("router-") => 2,
            "nats" => 3,
            n if n.starts_with("caf-") => 4,
            n if n.starts_with("ext-") => 5,
            _ => 6,
        }
    };
    let mut lanes: Vec<String> = topology.clone();
    lanes.push("nats".to_string());
    lanes.sort_by_key(|n| (rank(n), n.clone()));
    let violation = events
        .iter()
        .find(|e| e["k"] == "world.violation")
        .map(|e| e["v"].clone());
    let (focus, focus_tags) = focus_of(&events, violation.as_ref(), options.focus_seq);
    let ctx = Panel {
        events: &events,
        topology: &topology,
        lanes: &lanes,
        violation: violation.as_ref(),
        focus_tags: &focus_tags,
    };
    let mut svg = String::new();
    let whole = options.window.unwrap_or((0, end));
    if options.window.is_none() {
        if let Some(zoom) = zoom_window(&events, &focus_tags, violation.as_ref()) {
            let _ = write!(
                svg,
                "<h3>Zoom: {:.1}s to {:.1}s, where the highlighted messages live</h3><div class=\"wrap\">{}</div><h3>The whole run</h3>",
                zoom.0 as f64 / 1000.0,
                zoom.1 as f64 / 1000.0,
                ctx.svg(zoom, end)
            );
        }
    }
    let _ = write!(svg, "<div class=\"wrap\">{}</div>", ctx.svg(whole, end));

    let summary = violation.as_ref().map_or_else(
        || "<p class=ok>verdict: pass</p>".to_string(),
        |v| {
            format!(
                "<p class=bad>violation <b>{}</b>{} at {} ms: {}</p>",
                esc(v["invariant"].as_str().unwrap_or("")),
                v["known"]
                    .as_str()
                    .map(|k| format!(" (known core issue <b>{}</b>)", esc(k)))
                    .unwrap_or_default(),
                v["at"],
                esc(v["message"].as_str().unwrap_or(""))
            )
        },
    );
    let focus_note = if focus.is_empty() {
        String::new()
    } else {
        format!(
            "<p>Highlighted (bold): everything about {}.</p>",
            esc(&focus.join(", "))
        )
    };
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 12px; }}
.wrap {{ overflow-x: auto; border: 1px solid #ccc; }}
.bad {{ color: #b00000; }} .ok {{ color: #007000; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.sw {{ display: inline-block; width: 18px; height: 4px; vertical-align: middle; margin-right: 4px; }}
</style></head><body>
<h2>{title}</h2>
{summary}
{focus_note}
<div class="legend">
<span><i class="sw" style="background:#2060d0"></i>delivery</span>
<span><i class="sw" style="background:#20a020"></i>reply / ack</span>
<span><i class="sw" style="background:#8040c0"></i>DLQ / term</span>
<span><i class="sw" style="background:#f08000"></i>nak</span>
<span><i class="sw" style="background:#009090"></i>request / answer</span>
<span><i class="sw" style="background:#999"></i>pull / puback</span>
<span><i class="sw" style="background:#e04040;opacity:.4;height:10px"></i>connection down</span>
<span><i class="sw" style="background:#800000;opacity:.4;height:10px"></i>crash</span>
<span><i class="sw" style="background:#9040c0;opacity:.4;height:10px"></i>partition</span>
<span><i class="sw" style="background:#f0a000;opacity:.4;height:10px"></i>latency spike</span>
<span>dashed + ✕: lost in transit · F: fault · x: per-message fault · M: MAX_DELIVERIES · S: process start · !: known-issue trigger</span>
</div>
{svg}
</body></html>
"#,
        title = esc(&options.title),
    )
}

/// What every panel of the page draws from.
struct Panel<'a> {
    events: &'a [Value],
    topology: &'a [String],
    lanes: &'a [String],
    violation: Option<&'a Value>,
    focus_tags: &'a [String],
}

impl Panel<'_> {
    /// One SVG of the window `(from, to)` of a run that ended at `end`.
    fn svg(&self, (from, to): (u64, u64), end: u64) -> String {
        let (events, topology, lanes, violation) =
            (self.events, self.topology, self.lanes, self.violation);
        let focus_tags = self.focus_tags;
        let t_of = |v: &Value| v["t"].as_u64().unwrap_or(0);
        let to = to.min(end).max(from + 1);
        let span = to - from;
        let width_px = ((span as f64 / 1000.0) * 16.0).clamp(1400.0, 40_000.0);
        let scale = Scale {
            from,
            to,
            px_per_ms: width_px / span as f64,
        };
        let lane_y: BTreeMap<&str, f64> = lanes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), TOP + i as f64 * LANE_H + LANE_H / 2.0))
            .collect();
        let height = TOP + lanes.len() as f64 * LANE_H + 90.0;
        let total_w = LEFT + width_px + 40.0;
        let focused = !focus_tags.is_empty();
        let about_focus = |label: &str| -> bool {
            focus_tags
                .iter()
                .any(|t| label.ends_with(t.as_str()) || label.contains(&format!("{t} ")))
        };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0}" height="{height:.0}" font-family="monospace" font-size="11">"#
        );
        // Lanes and the time axis.
        for (i, name) in lanes.iter().enumerate() {
            let y = TOP + i as f64 * LANE_H;
            let fill = if name == "nats" {
                "#eef2fb"
            } else if i % 2 == 0 {
                "#fafafa"
            } else {
                "#f3f3f3"
            };
            let _ = write!(
                svg,
                r#"<rect x="0" y="{y:.1}" width="{total_w:.0}" height="{LANE_H}" fill="{fill}"/>"#
            );
            let _ = write!(
                svg,
                r#"<text x="8" y="{:.1}" font-weight="bold" font-size="12">{}</text>"#,
                y + LANE_H / 2.0 + 4.0,
                esc(name)
            );
        }
        let step_ms = pick_step(span, width_px);
        let mut t = from.div_ceil(step_ms) * step_ms;
        while t <= to {
            let x = scale.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                height - 80.0
            );
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{:.1}" fill="#555">{}s</text>"##,
                TOP - 8.0,
                t as f64 / 1000.0
            );
            t += step_ms;
        }

        let mut dots = String::new();
        let mut spans = String::new();
        let mut arrows_faded = String::new();
        let mut arrows = String::new();
        let mut drawn = 0usize;
        let max_arrows = 80_000;
        for e in events {
            let t = t_of(e);
            let k = e["k"].as_str().unwrap_or("");
            let node = e["n"].as_str().unwrap_or("");
            let v = &e["v"];
            let line_title = esc(&e.to_string());
            match k {
                "net" | "net.lost" => {
                    let sent = v["sent"].as_u64().unwrap_or(t);
                    if !scale.visible(sent, t) || drawn >= max_arrows {
                        continue;
                    }
                    let label = v["m"].as_str().unwrap_or("");
                    let from_lane = v["from"].as_str().unwrap_or("");
                    let (Some(&y1), Some(&y2)) = (lane_y.get(from_lane), lane_y.get(node)) else {
                        continue;
                    };
                    let (x1, x2) = (scale.x(sent), scale.x(t));
                    let color = arrow_color(label);
                    let lost = k == "net.lost";
                    let hot = about_focus(label);
                    let (w, opacity) = match (hot, focused) {
                        (true, _) => (2.2, 1.0),
                        (false, true) => (0.8, 0.25),
                        (false, false) => (0.9, 0.7),
                    };
                    let dash = if lost {
                        r#" stroke-dasharray="4 3""#
                    } else {
                        ""
                    };
                    let target = if hot { &mut arrows } else { &mut arrows_faded };
                    let _ = write!(
                        target,
                        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="{w}" opacity="{opacity}"{dash}><title>{line_title}</title></line>"#
                    );
                    if lost {
                        let _ = write!(
                            target,
                            r#"<path d="M{:.1},{:.1} l6,6 m0,-6 l-6,6" stroke="red" stroke-width="1.6" opacity="{opacity}"/>"#,
                            x2 - 3.0,
                            y2 - 3.0
                        );
                    } else {
                        let _ = write!(
                            target,
                            r#"<circle cx="{x2:.1}" cy="{y2:.1}" r="1.8" fill="{color}" opacity="{opacity}"/>"#
                        );
                    }
                    drawn += 1;
                }
                "fault" => {
                    let Some(y) = lane_y.get("nats").copied() else {
                        continue;
                    };
                    let f = &v["fault"];
                    let fault_span = |svg: &mut String,
                                      lane: &str,
                                      dur: u64,
                                      color: &str,
                                      what: &str| {
                        if let Some(&ly) = lane_y.get(lane) {
                            if scale.visible(t, t + dur) {
                                let (x1, x2) = (scale.x(t), scale.x(t + dur));
                                let _ = write!(
                                    svg,
                                    r#"<rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.35"><title>{} {}</title></rect>"#,
                                    ly - LANE_H / 2.0 + 2.0,
                                    (x2 - x1).max(2.0),
                                    LANE_H - 4.0,
                                    esc(what),
                                    line_title
                                );
                            }
                        }
                    };
                    let name_of = |i: &Value| {
                        i.as_u64()
                            .and_then(|i| topology.get(i as usize))
                            .cloned()
                            .unwrap_or_default()
                    };
                    if let Some(d) = f.get("LinkDrop") {
                        fault_span(
                            &mut spans,
                            &name_of(&d["node"]),
                            d["down_ms"].as_u64().unwrap_or(0),
                            "#e04040",
                            "connection down",
                        );
                    } else if let Some(d) = f.get("Crash") {
                        let lane = format!("router-{}", d["router"].as_u64().unwrap_or(0) + 1);
                        fault_span(
                            &mut spans,
                            &lane,
                            d["down_ms"].as_u64().unwrap_or(0),
                            "#800000",
                            "process crashed",
                        );
                    } else if let Some(d) = f.get("Partition") {
                        let ms = d["ms"].as_u64().unwrap_or(0);
                        fault_span(&mut spans, &name_of(&d["a"]), ms, "#9040c0", "partitioned");
                        fault_span(&mut spans, &name_of(&d["b"]), ms, "#9040c0", "partitioned");
                    } else if let Some(d) = f.get("Spike") {
                        let ms = d["ms"].as_u64().unwrap_or(0);
                        match d["node"].as_u64() {
                            Some(_) => fault_span(
                                &mut spans,
                                &name_of(&d["node"]),
                                ms,
                                "#f0a000",
                                "latency spike",
                            ),
                            None => {
                                for lane in topology {
                                    fault_span(
                                        &mut spans,
                                        lane,
                                        ms,
                                        "#f0a000",
                                        "latency spike (all)",
                                    );
                                }
                            }
                        }
                    } else if let Some(d) = f.get("BrokerRestart") {
                        let ms = d["down_ms"].as_u64().unwrap_or(0);
                        for lane in lanes {
                            fault_span(&mut spans, lane, ms, "#c00000", "server restart");
                        }
                    } else if scale.visible(t, t) {
                        let lane = if let Some(d) = f.get("SkewJump") {
                            format!("router-{}", d["router"].as_u64().unwrap_or(0) + 1)
                        } else if let Some(d) = f.get("Burst") {
                            format!("gw-{}", d["gateway"].as_u64().unwrap_or(0) + 1)
                        } else {
                            "nats".to_string()
                        };
                        let ly = lane_y.get(lane.as_str()).copied().unwrap_or(y);
                        marker(&mut dots, scale.x(t), ly, "#d00000", 'F', &line_title);
                    }
                }
                _ if k.starts_with("fault.") && k != "fault.crash" && scale.visible(t, t) => {
                    if let Some(&y) = lane_y.get(node) {
                        marker(&mut dots, scale.x(t), y - 12.0, "#d00000", 'x', &line_title);
                    }
                }
                "core.cmd" if scale.visible(t, t) => {
                    let Some(&y) = lane_y.get(node) else { continue };
                    let color = if v.get("Ack").is_some() {
                        "#20a020"
                    } else if v.get("Nak").is_some() {
                        "#f08000"
                    } else if v.get("Term").is_some() {
                        "#8040c0"
                    } else {
                        continue;
                    };
                    let _ = write!(
                        dots,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{line_title}</title></circle>"#,
                        scale.x(t),
                        y + 10.0
                    );
                }
                "js.advisory"
                    if scale.visible(t, t) && v["advisory"].get("MaxDeliveries").is_some() =>
                {
                    if let Some(&y) = lane_y.get("nats") {
                        marker(&mut dots, scale.x(t), y + 12.0, "#000", 'M', &line_title);
                    }
                }
                "known.trigger" if scale.visible(t, t) => {
                    if let Some(&y) = lane_y.get(node) {
                        marker(&mut dots, scale.x(t), y - 14.0, "#b08000", '!', &line_title);
                    }
                }
                "check.liveness" | "world.quiet" if scale.visible(t, t) => {
                    let color = if k == "world.quiet" {
                        "#008000"
                    } else {
                        "#4060c0"
                    };
                    let _ = write!(
                        dots,
                        r#"<rect x="{:.1}" y="{:.1}" width="2" height="10" fill="{color}"><title>{line_title}</title></rect>"#,
                        scale.x(t) - 1.0,
                        height - 78.0
                    );
                }
                "world.chaos-end" | "router.start" if scale.visible(t, t) => {
                    let x = scale.x(t);
                    if k == "world.chaos-end" {
                        let _ = write!(
                            dots,
                            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#008000" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#008000">heal: liveness phase</text>"##,
                            height - 80.0,
                            x + 4.0,
                            TOP - 22.0
                        );
                    } else if let Some(&y) = lane_y.get(node) {
                        marker(&mut dots, x, y, "#006000", 'S', &line_title);
                    }
                }
                _ => {}
            }
        }
        svg.push_str(&spans);
        svg.push_str(&arrows_faded);
        svg.push_str(&arrows);
        svg.push_str(&dots);
        if let Some(v) = &violation {
            let at = v["at"].as_u64().unwrap_or(end);
            let x = scale.x(at);
            let _ = write!(
                svg,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="red" stroke-width="3"><title>{}</title></line>"#,
                TOP - 30.0,
                height - 70.0,
                esc(&v.to_string())
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" fill="red" font-weight="bold">✗ {}</text>"#,
                (x - 200.0).max(LEFT),
                height - 50.0,
                esc(v["invariant"].as_str().unwrap_or(""))
            );
        }
        let _ = write!(
            svg,
            r##"<text x="8" y="{:.1}" fill="#4060c0">checks</text>"##,
            height - 70.0
        );
        svg.push_str("</svg>");
        svg
    }
}

/// The span of the highlighted messages' activity, up to the violation, if it is much
/// shorter than the run.
fn zoom_window(events: &[Value], tags: &[String], violation: Option<&Value>) -> Option<(u64, u64)> {
    if tags.is_empty() {
        return None;
    }
    let touched: Vec<u64> = events
        .iter()
        .filter(|e| e["k"] == "net" || e["k"] == "net.lost")
        .filter(|e| {
            let label = e["v"]["m"].as_str().unwrap_or("");
            tags.iter()
                .any(|t| label.ends_with(t.as_str()) || label.contains(&format!("{t} ")))
        })
        .flat_map(|e| {
            [
                e["v"]["sent"].as_u64().unwrap_or(0),
                e["t"].as_u64().unwrap_or(0),
            ]
        })
        .collect();
    let first = *touched.iter().min()?;
    let last = violation
        .and_then(|v| v["at"].as_u64())
        .unwrap_or(0)
        .max(*touched.iter().max()?);
    Some((first.saturating_sub(500), last + 500))
}

/// What to highlight: the stream sequence of the violation (or the one asked for), and
/// every decide message of the request the violation names. Returns a description and
/// the label tags (`router #12`) to match arrows by.
fn focus_of(
    events: &[Value],
    violation: Option<&Value>,
    asked: Option<u64>,
) -> (Vec<String>, Vec<String>) {
    let message = violation.and_then(|v| v["message"].as_str()).unwrap_or("");
    let durable = if message.contains("router-results") {
        "router-results"
    } else {
        "router"
    };
    let mut seqs: Vec<(String, u64)> = Vec::new();
    if let Some(s) = asked.or_else(|| violation.and_then(|v| v["seq"].as_u64())) {
        seqs.push((durable.to_string(), s));
    }
    let request = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| {
            w.strip_prefix("r-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    let mut about = Vec::new();
    if let Some(r) = request {
        let prefix = format!("gw-{}-", &r[2..]);
        for e in events
            .iter()
            .filter(|e| e["k"] == "js.store" && e["v"]["stream"] == "DECIDE")
        {
            let is_it = e["v"]["msg_id"]
                .as_str()
                .is_some_and(|m| m.starts_with(&prefix));
            if let (true, Some(s)) = (is_it, e["v"]["seq"].as_u64()) {
                if !seqs.iter().any(|(d, x)| d == "router" && *x == s) {
                    seqs.push(("router".to_string(), s));
                }
            }
        }
        about.push(format!("request {r}"));
    }
    about.extend(seqs.iter().map(|(d, s)| format!("{d} seq {s}")));
    let tags = seqs.iter().map(|(d, s)| format!("{d} #{s}")).collect();
    (about, tags)
}

fn marker(svg: &mut String, x: f64, y: f64, color: &str, glyph: char, title: &str) {
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" fill="{color}" font-weight="bold" font-size="12">{glyph}<title>{title}</title></text>"#,
        x - 3.0,
        y + 4.0
    );
}

fn arrow_color(label: &str) -> &'static str {
    if label.starts_with("router #")
        || label.starts_with("router-results #")
        || label.starts_with("caf #")
        || label.starts_with("usage #")
        || label.starts_with("router-advisories")
    {
        "#2060d0"
    } else if label.starts_with("pub _INBOX")
        || label.starts_with("ack ")
        || label.starts_with("msg _INBOX")
    {
        "#20a020"
    } else if label.contains(".dlq") || label.starts_with("term") {
        "#8040c0"
    } else if label.starts_with("nak") {
        "#f08000"
    } else if label.starts_with("req")
        || label.starts_with("msg")
        || label == "reply"
        || label == "respond"
        || label == "no responders"
    {
        "#009090"
    } else {
        "#999999"
    }
}

/// A tick spacing giving about one label per 100 px.
fn pick_step(span_ms: u64, width_px: f64) -> u64 {
    let per_px = span_ms as f64 / width_px.max(1.0);
    let want = (per_px * 100.0) as u64;
    [
        100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000,
    ]
    .into_iter()
    .find(|&s| s >= want)
    .unwrap_or(600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_small_trace() {
        let lines: Vec<String> = [
            r#"{"t":0,"k":"world.topology","n":"world","v":["router-1","gw-1"]}"#,
            r#"{"t":10,"k":"net","n":"nats","v":{"from":"gw-1","sent":5,"m":"pub beamline.router.v1.decide"}}"#,
            r#"{"t":12,"k":"net.lost","n":"router-1","v":{"from":"nats","sent":10,"m":"router #1 (1)"}}"#,
            r#"{"t":20,"k":"fault","n":"world","v":{"index":0,"fault":{"LinkDrop":{"node":0,"down_ms":50,"detect_ms":0,"server_notices":true}}}}"#,
            r#"{"t":90,"k":"world.violation","n":"world","v":{"invariant":"stuck","message":"m <b>","at":90,"seq":1,"known":null}}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let html = render(
            &lines,
            &TimelineOptions {
                title: "seed 1".into(),
                ..Default::default()
            },
        );
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"));
        assert!(html.contains("router-1") && html.contains("nats") && html.contains("gw-1"));
        assert!(
            html.contains("stroke-dasharray"),
            "the lost delivery is dashed"
        );
        assert!(html.contains("m &lt;b&gt;"), "text is escaped");
        assert!(
            html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count(),
            "no external assets: the only URL is the SVG namespace"
        );
    }
}
