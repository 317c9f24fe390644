//! A run's timeline as a Gantt chart, in SVG: each step path a row (fan-out
//! items side by side, one row each), each attempt a bar on one time axis
//! coloured by how it ended (retries are the earlier bars of a row), the
//! waits for an approval hatched, and the RTO objective as a line with the
//! measured recovery time against it. The HTML report embeds it and the
//! server's live view shows the same picture, so both are drawn here, once.
//!
//! Every text in it is escaped; it carries no script, so a browser may show
//! it as an image.

use runbook_state::{Event, Recorded};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// How a bar ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    /// Stopped by a crash, a kill or a stop; or still running at `until`.
    Open,
    Interrupted,
    Skipped,
    Undone,
    Waiting,
}

impl Outcome {
    fn class(self) -> &'static str {
        match self {
            Outcome::Succeeded => "tl-ok",
            Outcome::Failed => "tl-bad",
            Outcome::Open => "tl-run",
            Outcome::Interrupted => "tl-int",
            Outcome::Skipped => "tl-skip",
            Outcome::Undone => "tl-undo",
            Outcome::Waiting => "tl-wait",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Open => "running",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped => "skipped",
            Outcome::Undone => "undone",
            Outcome::Waiting => "waited for an approval",
        }
    }
}

/// One bar: an attempt of a step, or a wait, in ms from the run's start.
#[derive(Debug, Clone)]
struct Bar {
    from: u64,
    to: u64,
    attempt: u32,
    outcome: Outcome,
}

/// The chart's rows: step paths in the order they first appeared.
#[derive(Debug, Default)]
struct Rows {
    order: Vec<String>,
    bars: std::collections::HashMap<String, Vec<Bar>>,
    /// Each path's bar still open (started or waiting), by index.
    open: std::collections::HashMap<String, usize>,
}

impl Rows {
    fn row(&mut self, step: &str) -> &mut Vec<Bar> {
        if !self.bars.contains_key(step) {
            self.order.push(step.to_owned());
        }
        self.bars.entry(step.to_owned()).or_default()
    }

    fn open(&mut self, step: &str, at: u64, attempt: u32, outcome: Outcome) {
        self.close(step, at, Outcome::Interrupted);
        let row = self.row(step);
        row.push(Bar {
            from: at,
            to: at,
            attempt,
            outcome,
        });
        let i = row.len() - 1;
        self.open.insert(step.to_owned(), i);
    }

    /// Ends the step's open bar at `at` as `how` (a wait ends as a wait).
    fn close(&mut self, step: &str, at: u64, how: Outcome) {
        if let Some(i) = self.open.remove(step)
            && let Some(bar) = self.bars.get_mut(step).and_then(|r| r.get_mut(i))
        {
            bar.to = at.max(bar.from);
            if bar.outcome != Outcome::Waiting {
                bar.outcome = how;
            }
        }
    }

    /// A moment's mark (a skip, an undo).
    fn mark(&mut self, step: &str, at: u64, outcome: Outcome) {
        self.close(step, at, Outcome::Interrupted);
        self.row(step).push(Bar {
            from: at,
            to: at,
            attempt: 0,
            outcome,
        });
    }
}

fn time(at: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(at).ok()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The bars of a run's journal, its length in ms, and where each run
/// resumed (ms). `until`: where open bars end (now, for a live run; else
/// its last event).
fn fold(events: &[Recorded], until: Option<SystemTime>) -> (Rows, u64, Vec<u64>) {
    let mut rows = Rows::default();
    let mut resumed = Vec::new();
    let Some(start) = events.first().and_then(|r| time(&r.at)) else {
        return (rows, 0, resumed);
    };
    let offset = |at: &str| time(at).and_then(|t| t.duration_since(start).ok()).map_or(0, ms);
    let mut last = 0;
    for rec in events {
        let at = offset(&rec.at);
        last = last.max(at);
        match &rec.event {
            Event::StepStarted { step, attempt } => rows.open(step, at, *attempt, Outcome::Open),
            Event::StepSucceeded { step, .. } => rows.close(step, at, Outcome::Succeeded),
            Event::StepFailed { step, .. } => rows.close(step, at, Outcome::Failed),
            Event::StepInterrupted { step, .. } => rows.close(step, at, Outcome::Interrupted),
            Event::StepSkipped { step, .. } => rows.mark(step, at, Outcome::Skipped),
            Event::StepUndone { step } => rows.mark(step, at, Outcome::Undone),
            Event::StepWaiting { step, .. } => rows.open(step, at, 0, Outcome::Waiting),
            Event::RunResumed { .. } => resumed.push(at),
            // A stopped run's open bars end where it stopped: interrupted.
            Event::RunFinished { .. } => {
                let open: Vec<String> = rows.open.keys().cloned().collect();
                for step in open {
                    rows.close(&step, at, Outcome::Interrupted);
                }
            }
            _ => {}
        }
    }
    let end = until
        .and_then(|u| u.duration_since(start).ok())
        .map_or(last, ms)
        .max(last);
    let open: Vec<(String, usize)> = rows.open.drain().collect();
    for (step, i) in open {
        if let Some(bar) = rows.bars.get_mut(&step).and_then(|r| r.get_mut(i)) {
            bar.to = end;
        }
    }
    (rows, end, resumed)
}

/// A tick spacing that gives about 6 ticks over `span` ms.
fn tick(span: u64) -> u64 {
    const STEPS: &[u64] = &[
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
    ];
    STEPS.iter().copied().find(|s| span / s <= 8).unwrap_or(86_400_000)
}

/// `+1m30s`-style offsets.
fn offset_text(ms: u64) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    let d = Duration::from_millis(ms);
    if ms < 1_000 {
        return format!("+{ms}ms");
    }
    let secs = Duration::from_secs(d.as_secs());
    format!("+{}", humantime::format_duration(secs)).replace(' ', "")
}

/// What the chart measures a run against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Against {
    /// The playbook's RTO objective, in seconds.
    pub rto_target: Option<f64>,
    /// The RTO the run measured, in seconds.
    pub rto_measured: Option<f64>,
}

impl Against {
    /// The playbook's RTO objective and what the run's journal measured.
    pub fn of(events: &[Recorded], objectives: Option<&runbook_core::model::Objectives>) -> Against {
        Against {
            rto_target: objectives
                .and_then(|o| o.rto.as_deref())
                .and_then(|t| runbook_core::inputs::parse_duration(t).ok())
                .map(|d| d.as_secs_f64()),
            rto_measured: crate::measured(events, "rto_seconds"),
        }
    }
}

/// The SVG Gantt chart of a run's journal. `until`: where bars still open
/// end (now, for a run that is live; `None`: its last event).
pub fn svg(events: &[Recorded], against: Against, until: Option<SystemTime>) -> String {
    let (rows, end, resumed) = fold(events, until);
    let n = rows.order.len();
    let row_h: u64 = match n {
        0..=60 => 18,
        61..=300 => 10,
        _ => 6,
    };
    let label_w: u64 = 240;
    let chart_w: u64 = 720;
    let top: u64 = 28;
    let target_ms = against.rto_target.map(|s| (s * 1000.0) as u64);
    let measured_ms = against.rto_measured.map(|s| (s * 1000.0) as u64);
    let span = [Some(end), target_ms, measured_ms]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
        .max(1);
    // The axis ends at a tick, so that its last label says how long it shows.
    let every = tick(span);
    let span = span.div_ceil(every) * every;
    let x = |t: u64| label_w + t.min(span) * chart_w / span;
    let legend_h = 22;
    let height = top + n as u64 * row_h + legend_h + 8;
    let width = label_w + chart_w + 16;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11" role="img" aria-label="timeline of the run">"#
    );
    o.push_str(concat!(
        "<style>.tl-ok{fill:#1a7f37}.tl-bad{fill:#cf222e}.tl-run{fill:#0969da}.tl-int{fill:#8250df}",
        ".tl-skip{fill:#afb8c1}.tl-undo{fill:#bf8700}.tl-wait{fill:url(#hatch)}.tl-lbl{fill:#1d2125}.tl-ax{stroke:#d8dee4}",
        ".tl-mut{fill:#5f6b76}.tl-obj{stroke:#cf222e;stroke-dasharray:4 3}.tl-res{stroke:#8250df;stroke-dasharray:2 2}</style>",
        "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">",
        "<rect width=\"6\" height=\"6\" fill=\"#fff8c5\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#9a6700\" stroke-width=\"2\"/></pattern></defs>"
    ));
    // The time axis.
    let mut t = 0;
    while t <= span {
        let _ = write!(
            o,
            r#"<line class="tl-ax" x1="{0}" y1="{1}" x2="{0}" y2="{2}"/><text class="tl-mut" x="{0}" y="{3}" text-anchor="{5}">{4}</text>"#,
            x(t),
            top - 4,
            top + n as u64 * row_h,
            top - 8,
            offset_text(t),
            if t + every > span && t > 0 { "end" } else { "middle" }
        );
        t += every;
    }
    // Where the run was resumed after a stop.
    for r in resumed {
        let _ = write!(
            o,
            r#"<line class="tl-res" x1="{0}" y1="{1}" x2="{0}" y2="{2}"><title>resumed at {3}</title></line>"#,
            x(r),
            top,
            top + n as u64 * row_h,
            offset_text(r)
        );
    }
    // Each step path's row.
    for (i, step) in rows.order.iter().enumerate() {
        let y = top + i as u64 * row_h;
        if row_h >= 10 {
            let shown: String = step.chars().take(38).collect();
            let _ = write!(
                o,
                r#"<text class="tl-lbl" x="4" y="{}">{}</text>"#,
                y + row_h - 5,
                crate::render::xml(&shown)
            );
        }
        for bar in rows.bars.get(step).into_iter().flatten() {
            let x0 = x(bar.from);
            let w = (x(bar.to).saturating_sub(x0)).max(2);
            let took = offset_text(bar.to - bar.from).trim_start_matches('+').to_owned();
            let attempt = if bar.attempt > 1 {
                format!(" (attempt {})", bar.attempt)
            } else {
                String::new()
            };
            let _ = write!(
                o,
                r#"<rect class="{}" x="{x0}" y="{}" width="{w}" height="{}" rx="2"><title>{}{attempt}: {} after {took}, from {}</title></rect>"#,
                bar.outcome.class(),
                y + 2,
                row_h.saturating_sub(4).max(2),
                crate::render::xml(step),
                bar.outcome.words(),
                offset_text(bar.from)
            );
        }
    }
    let bottom = top + n as u64 * row_h;
    // The RTO objective, and what the run measured against it.
    if let Some(m) = measured_ms {
        let missed = target_ms.is_some_and(|t| m > t);
        let class = if missed { "tl-bad" } else { "tl-ok" };
        let _ = write!(
            o,
            r#"<rect class="{class}" x="{}" y="{}" width="{}" height="4" opacity="0.6"><title>measured RTO {}</title></rect>"#,
            label_w,
            bottom + 2,
            x(m) - label_w,
            offset_text(m).trim_start_matches('+')
        );
    }
    if let Some(t) = target_ms {
        let _ = write!(
            o,
            r#"<line class="tl-obj" x1="{0}" y1="{1}" x2="{0}" y2="{2}"/><text class="tl-bad" x="{3}" y="{4}" text-anchor="end">RTO objective {5}</text>"#,
            x(t),
            top - 4,
            bottom + 6,
            x(t).saturating_sub(3),
            top + 10,
            offset_text(t).trim_start_matches('+')
        );
    }
    // The legend.
    let mut lx = label_w;
    let ly = bottom + legend_h;
    for (class, words) in [
        ("tl-ok", "succeeded"),
        ("tl-bad", "failed"),
        ("tl-run", "running"),
        ("tl-int", "interrupted"),
        ("tl-wait", "waiting for approval"),
        ("tl-skip", "skipped"),
        ("tl-undo", "undone"),
    ] {
        let _ = write!(
            o,
            r#"<rect class="{class}" x="{lx}" y="{}" width="10" height="10"/><text class="tl-mut" x="{}" y="{ly}">{words}</text>"#,
            ly - 9,
            lx + 14
        );
        lx += 24 + 6 * words.len() as u64;
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_state::Recorded;

    fn at(seq: i64, secs: u64, event: Event) -> Recorded {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs);
        Recorded {
            seq,
            at: humantime::format_rfc3339_millis(t).to_string(),
            event,
        }
    }

    fn started(step: &str, attempt: u32) -> Event {
        Event::StepStarted {
            step: step.into(),
            attempt,
        }
    }

    #[test]
    fn attempts_waits_and_items_are_bars_on_one_axis() {
        let events = vec![
            at(
                1,
                0,
                Event::RunStarted {
                    user: "a".into(),
                    runner: None,
                },
            ),
            at(2, 0, started("roll[web-1].deploy", 1)),
            at(3, 0, started("roll[web-2].deploy", 1)),
            at(
                4,
                5,
                Event::StepFailed {
                    step: "roll[web-1].deploy".into(),
                    error: "boom".into(),
                    attempt: 1,
                    will_retry: true,
                },
            ),
            at(5, 6, started("roll[web-1].deploy", 2)),
            at(
                6,
                9,
                Event::StepSucceeded {
                    step: "roll[web-1].deploy".into(),
                    outputs: serde_json::Value::Null,
                    attempt: 2,
                },
            ),
            at(
                7,
                9,
                Event::StepSucceeded {
                    step: "roll[web-2].deploy".into(),
                    outputs: serde_json::Value::Null,
                    attempt: 1,
                },
            ),
            at(
                8,
                10,
                Event::StepWaiting {
                    step: "ok <go>".into(),
                    message: "go?".into(),
                    expires_at: None,
                },
            ),
        ];
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 40);
        let (rows, end, _) = fold(&events, Some(until));
        assert_eq!(end, 40_000, "a live run's open bars reach now");
        assert_eq!(rows.order, ["roll[web-1].deploy", "roll[web-2].deploy", "ok <go>"]);
        let web1 = &rows.bars["roll[web-1].deploy"];
        assert_eq!(web1.len(), 2, "each attempt a bar");
        assert_eq!((web1[0].from, web1[0].to, web1[0].outcome), (0, 5_000, Outcome::Failed));
        assert_eq!((web1[1].from, web1[1].to, web1[1].attempt), (6_000, 9_000, 2));
        let wait = &rows.bars["ok <go>"][0];
        assert_eq!((wait.from, wait.to, wait.outcome), (10_000, 40_000, Outcome::Waiting));

        let against = Against {
            rto_target: Some(30.0),
            rto_measured: Some(35.0),
        };
        let svg = svg(&events, against, Some(until));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains("ok &lt;go&gt;") && !svg.contains("<go>"),
            "names are escaped"
        );
        assert!(
            svg.contains("roll[web-1].deploy (attempt 2): succeeded after 3s"),
            "{svg}"
        );
        assert!(svg.contains("RTO objective 30s"));
        assert!(svg.contains(r#"<rect class="tl-bad" x="240""#), "a missed RTO is red");
        assert!(!svg.contains("<script"), "no script: it may be shown as an image");
    }

    #[test]
    fn a_stopped_run_leaves_its_open_steps_interrupted() {
        let events = vec![
            at(
                1,
                0,
                Event::RunStarted {
                    user: "a".into(),
                    runner: None,
                },
            ),
            at(2, 1, started("a", 1)),
            at(
                3,
                4,
                Event::RunFinished {
                    status: runbook_state::RunStatus::Interrupted,
                    error: None,
                },
            ),
            at(
                4,
                20,
                Event::RunResumed {
                    user: "a".into(),
                    runner: None,
                },
            ),
            at(5, 20, started("a", 2)),
            at(
                6,
                22,
                Event::StepSucceeded {
                    step: "a".into(),
                    outputs: serde_json::Value::Null,
                    attempt: 2,
                },
            ),
        ];
        let (rows, end, resumed) = fold(&events, None);
        assert_eq!((end, resumed), (22_000, vec![20_000]));
        let a = &rows.bars["a"];
        assert_eq!((a[0].to, a[0].outcome), (4_000, Outcome::Interrupted));
        assert_eq!((a[1].from, a[1].outcome), (20_000, Outcome::Succeeded));
        assert_eq!(tick(22_000), 5_000);
        assert_eq!(offset_text(90_000), "+1m30s");
    }
}
