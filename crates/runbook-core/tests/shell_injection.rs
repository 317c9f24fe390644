//! Property: whatever a value holds, and wherever a shell-run field puts it
//! (bare, in single quotes, in double quotes, glued to other text), `/bin/sh`
//! sees exactly that text as data, also when a helper (`default`, `join`,
//! `json`) produced it. The rendered commands are run by a real
//! `sh`, which prints what it received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use runbook_core::template::{Data, Mode, Renderer};
use serde_json::json;
use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("/bin/sh").arg("-c").arg(cmd).output().expect("sh runs");
    assert!(
        out.status.success(),
        "sh failed on {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn values_stay_data(v in "[ -~\\n\\t]{0,24}") {
        let r = Renderer::new();
        let ctx = Data::new(json!({ "inputs": { "v": v, "l": [v, v] } }));
        for (template, expected) in [
            ("printf '%s|' {{inputs.v}}", format!("{v}|")),
            ("printf '%s|' 'pre {{inputs.v}} post'", format!("pre {v} post|")),
            ("printf '%s|' \"pre {{inputs.v}} post\"", format!("pre {v} post|")),
            ("printf '%s|' pre{{inputs.v}}post", format!("pre{v}post|")),
            // Helper results are values too.
            ("printf '%s|' {{default inputs.v \"x\"}}", format!("{}|", if v.is_empty() { "x" } else { &v })),
            ("printf '%s|' \"{{join (lookup inputs 'l') ','}}\"", format!("{v},{v}|")),
            ("printf '%s|' '{{json inputs.v}}'", format!("{}|", json!(v))),
            // Nested contexts: command substitution (inside quotes too), a
            // here-document, a comment, a `case` pattern.
            ("printf '%s|' \"$(printf '%s' {{inputs.v}})\"", format!("{}|", v.trim_end_matches('\n'))),
            ("printf '%s|' \"r: $(printf '%s' \"{{inputs.v}}\")\"", format!("r: {}|", v.trim_end_matches('\n'))),
            ("x=$(printf '%s' {{inputs.v}}); printf '%s|' \"$x\"", format!("{}|", v.trim_end_matches('\n'))),
            ("printf '%s|' ok # {{inputs.v}}", "ok|".to_owned()),
            ("case {{inputs.v}} in {{inputs.v}}) printf 'same|';; *) printf 'differ|';; esac", "same|".to_owned()),
        ] {
            let cmd = r.render_str(template, &ctx, Mode::Shell).expect("renders");
            prop_assert_eq!(sh(&cmd), expected, "template {:?} rendered {:?}", template, cmd);
        }
        // A here-document's body takes the text as it is, unless a line of it
        // would end the document early: then the command is refused.
        let heredoc = "cat <<EOF\n{{inputs.v}}|\nEOF";
        match r.render_str(heredoc, &ctx, Mode::Shell) {
            Ok(cmd) => prop_assert_eq!(sh(&cmd), format!("{v}|\n"), "rendered {:?}", cmd),
            Err(e) => prop_assert!(v.lines().any(|l| l == "EOF"), "refused {:?}: {}", v, e),
        }
        // Arithmetic takes integers only.
        let arith = r.render_str("printf '%s|' $(( {{inputs.v}} + 1 ))", &ctx, Mode::Shell);
        let decimal = regex_lite(&v);
        match (decimal, arith) {
            (Some(n), Ok(cmd)) => prop_assert_eq!(sh(&cmd), format!("{}|", n + 1)),
            (None, Err(_)) => {}
            (n, other) => prop_assert!(false, "{:?} gave {:?} for {:?}", v, other, n),
        }
    }

    #[test]
    fn heredoc_delimiters_in_values_are_refused(v in "[a-z ]{0,8}") {
        let r = Renderer::new();
        let ctx = Data::new(json!({ "inputs": { "v": format!("{v}\nEOF\ntouch /tmp/never") } }));
        prop_assert!(r.render_str("cat <<EOF\n{{inputs.v}}\nEOF", &ctx, Mode::Shell).is_err());
    }
}

/// The value as a decimal integer without a leading zero, if it is one.
fn regex_lite(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let plain =
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if plain { v.parse().ok() } else { None }
}
