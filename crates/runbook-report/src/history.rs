//! A playbook's history as a chart, in SVG: one bar per run, oldest on the
//! left, as tall as the run took and coloured by how it ended, and for DR
//! drills the recovery time each run measured as a line against the RTO
//! objective. Every text in it is escaped; it carries no script.

use std::fmt::Write;

/// One run of the history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Point {
    /// The run id.
    pub run: String,
    /// How it ended (`succeeded`, `failed`, ...).
    pub status: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it took, in seconds, if it ended.
    pub took_seconds: Option<f64>,
    /// The recovery time it measured (`rto_seconds`), if it did.
    pub rto_seconds: Option<f64>,
}

fn class(status: &str) -> &'static str {
    match status {
        "succeeded" => "h-ok",
        "failed" | "cancelled" => "h-bad",
        "waiting" => "h-wait",
        "running" | "queued" => "h-run",
        _ => "h-int",
    }
}

/// Seconds as a short duration (`1m30s`).
fn secs(s: f64) -> String {
    let whole = std::time::Duration::from_secs(s.max(0.0).round() as u64);
    if whole.is_zero() {
        return format!("{:.1}s", s.max(0.0));
    }
    humantime::format_duration(whole).to_string().replace(' ', "")
}

/// The chart of `points` (oldest first), against the RTO objective in
/// seconds if the playbook has one.
pub fn svg(points: &[Point], rto_target: Option<f64>) -> String {
    let (left, top, plot_h, bar_w, gap) = (56u64, 16u64, 160u64, 14u64, 4u64);
    let n = points.len() as u64;
    let width = left + n.max(1) * (bar_w + gap) + 24;
    let height = top + plot_h + 40;
    let highest = points
        .iter()
        .flat_map(|p| [p.took_seconds, p.rto_seconds])
        .flatten()
        .chain(rto_target)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let y = |s: f64| top + plot_h - ((s / highest) * plot_h as f64).round().clamp(0.0, plot_h as f64) as u64;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="history" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11" role="img" aria-label="durations and outcomes of the runs">"#
    );
    o.push_str(concat!(
        "<style>.h-ok{fill:#1a7f37}.h-bad{fill:#cf222e}.h-wait{fill:#9a6700}.h-run{fill:#0969da}.h-int{fill:#8250df}",
        ".h-ax{stroke:#d8dee4}.h-mut{fill:#5f6b76}.h-obj{stroke:#cf222e;stroke-dasharray:4 3}",
        ".h-rto{fill:none;stroke:#1d2125;stroke-width:1.5}.h-dot{fill:#1d2125}</style>"
    ));
    // The axis: nothing, half and the highest.
    for frac in [0.0, 0.5, 1.0] {
        let v = highest * frac;
        let _ = write!(
            o,
            r#"<line class="h-ax" x1="{left}" y1="{0}" x2="{1}" y2="{0}"/><text class="h-mut" x="{2}" y="{3}" text-anchor="end">{4}</text>"#,
            y(v),
            width - 8,
            left - 4,
            y(v) + 4,
            secs(v)
        );
    }
    let x = |i: u64| left + gap + i * (bar_w + gap);
    let mut line = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let i = i as u64;
        let took = p.took_seconds.unwrap_or(0.0);
        let h = (top + plot_h).saturating_sub(y(took)).max(2);
        let rto = p.rto_seconds.map(|r| format!("; RTO {}", secs(r))).unwrap_or_default();
        let _ = write!(
            o,
            r#"<rect class="{}" x="{}" y="{}" width="{bar_w}" height="{h}"><title>{} {}: {} at {}{rto}</title></rect>"#,
            class(&p.status),
            x(i),
            top + plot_h - h,
            crate::render::xml(&p.run),
            crate::render::xml(&p.status),
            p.took_seconds
                .map_or("not ended".to_owned(), |t| format!("took {}", secs(t))),
            crate::render::xml(&p.started),
        );
        if let Some(r) = p.rto_seconds {
            line.push((x(i) + bar_w / 2, y(r)));
        }
    }
    if !line.is_empty() {
        let path: Vec<String> = line.iter().map(|(a, b)| format!("{a},{b}")).collect();
        let _ = write!(o, r#"<polyline class="h-rto" points="{}"/>"#, path.join(" "));
        for (a, b) in &line {
            let _ = write!(o, r#"<circle class="h-dot" cx="{a}" cy="{b}" r="2.5"/>"#);
        }
    }
    if let Some(t) = rto_target {
        let _ = write!(
            o,
            r#"<line class="h-obj" x1="{left}" y1="{0}" x2="{1}" y2="{0}"/><text class="h-bad" x="{1}" y="{2}" text-anchor="end">RTO objective {3}</text>"#,
            y(t),
            width - 8,
            y(t).saturating_sub(3),
            secs(t)
        );
    }
    let _ = write!(
        o,
        r#"<text class="h-mut" x="{left}" y="{}">bars: how long each run took (oldest left), coloured by outcome; line: the RTO each drill measured</text>"#,
        top + plot_h + 24
    );
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(run: &str, status: &str, took: f64, rto: Option<f64>) -> Point {
        Point {
            run: run.into(),
            status: status.into(),
            started: "2026-11-28T10:00:00Z".into(),
            took_seconds: Some(took),
            rto_seconds: rto,
        }
    }

    #[test]
    fn each_run_a_bar_and_each_drill_a_point_against_the_objective() {
        let points = [
            point("r1", "succeeded", 60.0, Some(40.0)),
            point("r2<x>", "failed", 120.0, None),
            point("r3", "succeeded", 90.0, Some(75.0)),
        ];
        let svg = svg(&points, Some(60.0));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("r2&lt;x&gt; failed: took 2m"), "{svg}");
        assert!(
            svg.contains("r3 succeeded: took 1m30s at 2026-11-28T10:00:00Z; RTO 1m15s"),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 2, "the drills that measured an RTO");
        assert!(svg.contains("RTO objective 1m"));
        assert!(!svg.contains("<script"));
    }
}
