//! Rendering diagnostics for people: miette's graphical report with the file,
//! line and column, a label under the span, and the hint.

use miette::{GraphicalReportHandler, GraphicalTheme};
use runbook_core::diag::{Diagnostic, Located, OneLine, Source};
use std::io::IsTerminal;

fn handler() -> GraphicalReportHandler {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_context_lines(1)
}

/// A source line longer than this is not drawn whole: the diagnostic shows
/// the part around its span.
const LONG_LINE: usize = 240;
/// Characters shown on each side of the span on a long line.
const AROUND: usize = 60;
/// The most diagnostics printed for one file; the rest are counted.
pub(crate) const SHOWN: usize = 50;

/// Renders one diagnostic in its source.
pub(crate) fn render(source: &Source, diagnostic: &Diagnostic) -> String {
    let located = Located {
        diagnostic: diagnostic.clone(),
        source: source.clone(),
    };
    if let Some(span) = diagnostic.span {
        if let Some(excerpt) = long_line_excerpt(&source.text, span.offset, span.len) {
            return format!("{}\n{excerpt}", OneLine(&located));
        }
    }
    // Long lines around it (the context shown) are cut for display; the span
    // moves by what was cut before it, so line and column stay true.
    let located = match diagnostic.span {
        Some(span) => {
            let (text, shift) = cut_long_lines(&source.text, span.offset);
            let mut d = diagnostic.clone();
            d.span = Some(runbook_core::diag::Span {
                offset: span.offset - shift,
                ..span
            });
            Located {
                diagnostic: d,
                source: Source::new(source.name.clone(), text),
            }
        }
        None => located,
    };
    let mut out = String::new();
    if diagnostic.span.is_none() || handler().render_report(&mut out, &located).is_err() {
        // No location to draw: the one-line `file: error: message` form says it all.
        return format!("{}\n", OneLine(&located));
    }
    out
}

/// The part of a long line around a span, with a caret line under the span;
/// `None` when the line is short enough to draw whole.
fn long_line_excerpt(text: &str, offset: usize, len: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text.get(start..end)?;
    if line.chars().count() <= LONG_LINE {
        return None;
    }
    let before: String = {
        let b: Vec<char> = text[start..offset].chars().collect();
        b[b.len().saturating_sub(AROUND)..].iter().collect()
    };
    let span_end = (offset + len).min(end);
    let marked: String = text.get(offset..span_end).unwrap_or("").chars().take(AROUND).collect();
    let after: String = text.get(span_end..end).unwrap_or("").chars().take(AROUND).collect();
    let lead = if before.len() < offset - start { "…" } else { "" };
    let tail = if span_end + after.len() < end { "…" } else { "" };
    let pad = lead.chars().count() + before.chars().count();
    Some(format!(
        "  {lead}{before}{marked}{after}{tail}\n  {}{}\n  (a line of {} characters, shown around the error)\n",
        " ".repeat(pad),
        "^".repeat(marked.chars().count().max(1)),
        line.chars().count()
    ))
}

/// The text with every line longer than [`LONG_LINE`] cut (the line holding
/// `offset` is short, or it would have been excerpted), and how many bytes
/// were cut before `offset`.
fn cut_long_lines(text: &str, offset: usize) -> (String, usize) {
    let mut out = String::with_capacity(text.len().min(1 << 20));
    let (mut at, mut shift) = (0usize, 0usize);
    for line in text.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        // Cut only where it saves more than the mark costs, so the shift is positive.
        if body.chars().count() > LONG_LINE + 8 {
            let kept: String = body.chars().take(LONG_LINE).collect();
            out.push_str(&kept);
            out.push('…');
            if line.ends_with('\n') {
                out.push('\n');
            }
            if at + line.len() <= offset {
                shift += line.len() - (kept.len() + '…'.len_utf8() + usize::from(line.ends_with('\n')));
            }
        } else {
            out.push_str(line);
        }
        at += line.len();
    }
    (out, shift)
}

/// Prints diagnostics to stderr: the first [`SHOWN`], then how many more.
pub(crate) fn eprint_all(source: &Source, diagnostics: &[Diagnostic]) {
    for d in diagnostics.iter().take(SHOWN) {
        eprint!("{}", render(source, d));
    }
    if diagnostics.len() > SHOWN {
        let more = diagnostics.len() - SHOWN;
        eprintln!(
            "… {more} more {} in {}, not shown (fix the ones above first)",
            if more == 1 { "diagnostic" } else { "diagnostics" },
            source.name
        );
    }
}

/// `1 error`, `3 errors`.
pub(crate) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
