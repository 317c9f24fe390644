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

/// Renders one diagnostic in its source.
pub(crate) fn render(source: &Source, diagnostic: &Diagnostic) -> String {
    let located = Located {
        diagnostic: diagnostic.clone(),
        source: source.clone(),
    };
    let mut out = String::new();
    if diagnostic.span.is_none() || handler().render_report(&mut out, &located).is_err() {
        // No location to draw: the one-line `file: error: message` form says it all.
        return format!("{}\n", OneLine(&located));
    }
    out
}

/// Prints diagnostics to stderr.
pub(crate) fn eprint_all(source: &Source, diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprint!("{}", render(source, d));
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
