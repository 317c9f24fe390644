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
        ] {
            let cmd = r.render_str(template, &ctx, Mode::Shell).expect("renders");
            prop_assert_eq!(sh(&cmd), expected, "template {:?} rendered {:?}", template, cmd);
        }
    }
}
