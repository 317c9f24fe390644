//! Masking secrets wherever they could appear: log lines, outputs, errors,
//! events, the journal. Where their values come from is `runbook-secrets`'.

use aho_corasick::AhoCorasick;
use serde_json::Value as Json;

/// What replaces a secret value.
pub const MASK: &str = "***";

/// The forms of a secret that tools print: the value, its base64 (standard
/// and URL-safe, padded or not, with or without a trailing newline), its
/// URL-encoding and its JSON-escaped text.
/// A step that runs `printf %s "$TOKEN" | base64` or puts it in a URL or a
/// JSON document prints one of them.
pub fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![value.to_owned()];
    // `echo "$TOKEN" | base64` encodes the newline too.
    for text in [value.to_owned(), format!("{value}\n")] {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(engine.encode(&text));
        }
    }
    out.push(percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string());
    let json = serde_json::to_string(value).unwrap_or_default();
    out.push(json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned());
    out.sort();
    out.dedup();
    out
}

/// Replaces every occurrence of any secret (in any of its [`forms`]) with
/// [`MASK`]. Values a step registers while the run goes on
/// ([`Masker::add`]) are masked from then on.
#[derive(Debug, Default)]
pub struct Masker {
    inner: std::sync::RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    values: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl Inner {
    fn build(values: Vec<String>) -> Inner {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        let matcher = (!values.is_empty())
            .then(|| {
                aho_corasick::AhoCorasickBuilder::new()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(&values)
                    .ok()
            })
            .flatten();
        Inner { values, matcher }
    }
}

impl Masker {
    /// A masker for these values and their [`forms`] (empty ones are
    /// ignored). Longer values are matched first, so a secret containing
    /// another is masked whole.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let all = values.into_iter().filter(|v| !v.is_empty()).flat_map(forms).collect();
        Masker {
            inner: std::sync::RwLock::new(Inner::build(all)),
        }
    }

    /// Masks `value` (and its forms) from now on: a value a step registered
    /// as secret (`::add-mask::VALUE`).
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        if let Ok(mut inner) = self.inner.write() {
            let mut values = std::mem::take(&mut inner.values);
            values.extend(forms(value));
            *inner = Inner::build(values);
        }
    }

    /// Masks a text.
    pub fn text(&self, s: &str) -> String {
        match self.inner.read().ok().as_ref().and_then(|i| i.matcher.as_ref()) {
            Some(m) => m.replace_all(s, &vec![MASK; m.patterns_len()]),
            None => s.to_owned(),
        }
    }

    /// Masks every string in a JSON value (keys included).
    pub fn json(&self, v: &Json) -> Json {
        match v {
            Json::String(s) => Json::String(self.text(s)),
            Json::Array(a) => Json::Array(a.iter().map(|x| self.json(x)).collect()),
            Json::Object(m) => Json::Object(m.iter().map(|(k, x)| (self.text(k), self.json(x))).collect()),
            other => other.clone(),
        }
    }
}

/// A log line by which a step registers a value it produced as secret
/// (`::add-mask::VALUE`, as GitHub Actions spells it): the value.
pub fn add_mask(line: &str) -> Option<&str> {
    line.trim_end_matches(['\r', '\n'])
        .strip_prefix("::add-mask::")
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Wherever secrets appear in a line (alone, repeated, adjacent,
        /// overlapping each other), the masked line contains none of them.
        #[test]
        fn no_masked_line_contains_a_secret(
            secrets in proptest::collection::vec("[A-Za-z0-9!@#%^&()=+-]{4,16}", 1..4),
            parts in proptest::collection::vec(("[ -~]{0,12}", 0..4usize), 0..8),
        ) {
            let m = Masker::new(secrets.iter().map(String::as_str));
            let mut line = String::new();
            for (text, which) in &parts {
                line.push_str(text);
                if let Some(s) = secrets.get(*which) {
                    line.push_str(s);
                }
            }
            let masked = m.text(&line);
            for s in &secrets {
                prop_assert!(!masked.contains(s.as_str()), "{:?} still in {:?}", s, masked);
            }
            let j = m.json(&json!({ "k": [line.clone()], line.clone(): 1 }));
            for s in &secrets {
                prop_assert!(!j.to_string().contains(s.as_str()));
            }
        }
    }

    /// A secret's derived forms, as the tools a step pipes it through print
    /// them.
    fn encodings(s: &str) -> [String; 4] {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let json = serde_json::to_string(s).unwrap();
        [
            STANDARD.encode(s),
            URL_SAFE_NO_PAD.encode(s),
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string(),
            json[1..json.len() - 1].to_owned(),
        ]
    }

    proptest! {
        /// Whatever the secret, its base64 (standard and URL-safe), its
        /// URL-encoding and its JSON-escaped text are masked wherever they
        /// appear in a line.
        #[test]
        fn no_masked_line_contains_a_derived_form(
            secret in "[ -~]{6,24}|[\\PC]{4,12}",
            before in "[ -~]{0,10}",
            after in "[ -~]{0,10}",
            which in 0..4usize,
        ) {
            let m = Masker::new([secret.as_str()]);
            let form = encodings(&secret)[which].clone();
            let masked = m.text(&format!("{before}{form}{after}"));
            prop_assert!(!masked.contains(&form), "{:?} (form {}) still in {:?}", form, which, masked);
        }
    }

    #[test]
    fn a_value_registered_while_running_is_masked_from_then_on() {
        let m = Masker::new(["hunter2"]);
        assert_eq!(m.text("made gen-pw-99 and hunter2"), "made gen-pw-99 and ***");
        assert_eq!(add_mask("::add-mask::gen-pw-99\n"), Some("gen-pw-99"));
        assert_eq!(add_mask("::add-mask::"), None);
        assert_eq!(add_mask("echo ::add-mask::x"), None, "only a whole line registers");
        m.add("gen-pw-99");
        assert_eq!(m.text("made gen-pw-99 and hunter2"), "made *** and ***");
        assert_eq!(m.text("Z2VuLXB3LTk5"), "***", "its base64 too");
    }

    #[test]
    fn masks_everywhere_longest_first() {
        let m = Masker::new(["hunter2", "hunter2-extended", ""]);
        assert_eq!(m.text("pw=hunter2-extended and hunter2"), "pw=*** and ***");
        assert_eq!(
            m.json(&json!({"a": ["x hunter2 y"], "hunter2": 1})),
            json!({"a": ["x *** y"], "***": 1})
        );
        assert_eq!(Masker::new([]).text("hunter2"), "hunter2");
    }
}
