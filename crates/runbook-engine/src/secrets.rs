//! Masking secrets wherever they could appear: log lines, outputs, errors,
//! events, the journal. Where their values come from is `runbook-secrets`'.

use aho_corasick::AhoCorasick;
use serde_json::Value as Json;

/// What replaces a secret value.
pub const MASK: &str = "***";

/// The shortest derived form that is masked on its own: a shorter run of
/// base64 or hex characters would match ordinary text.
const MIN_PARTIAL: usize = 6;

/// The forms of a secret that tools print, each masked wherever it appears:
/// - the value itself;
/// - base64, standard and URL-safe, padded or not, of the value and of the
///   value with a line break (`echo "$T" | base64`), and the characters that
///   encode only the secret when it stands at each of the three alignments
///   behind a prefix (`base64("user:" + secret)`);
/// - URL encodings: every character but letters and digits, RFC 3986's
///   component (`-._~` kept), with `/` kept (Python's `quote`), the form
///   encoding (`+` for space), each in upper- and lower-case hex;
/// - JSON string escapes: as serde and JavaScript write them, ASCII-only
///   (`\uXXXX`, surrogate pairs, either hex case) and with `\/`;
/// - hex of its bytes, in both cases.
///
/// Not masked: transformations that are not encodings (reversed, spaced,
/// split across lines, hashed, encrypted, compressed).
pub fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![value.to_owned()];
    for text in [value.to_owned(), format!("{value}\n")] {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(engine.encode(&text));
        }
    }
    // Behind a prefix of k bytes, the characters from ceil(8k/6) to
    // floor(8(k+n)/6) depend on the secret's bytes alone.
    let n = value.len();
    for k in 0..3usize {
        let mut bytes = vec![0u8; k];
        bytes.extend_from_slice(value.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&bytes);
            let (start, end) = ((8 * k).div_ceil(6), (8 * (k + n)) / 6);
            if let Some(middle) = text.get(start..end).filter(|m| m.len() >= MIN_PARTIAL) {
                out.push(middle.to_owned());
            }
        }
    }
    out.extend(url_forms(value));
    out.extend(json_forms(value));
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    out.push(hex.to_uppercase());
    out.push(hex);
    out.retain(|f| !f.is_empty());
    out.sort();
    out.dedup();
    out
}

/// The URL encodings tools produce: which characters they keep as they are,
/// whether a space is `+`, and the case of the hex digits.
fn url_forms(value: &str) -> Vec<String> {
    // Everything but letters and digits; RFC 3986 (jq, curl); Python's
    // `quote` (keeps `/`); JavaScript's `encodeURIComponent`; HTML forms.
    const KEEP: [&str; 5] = ["", "-._~", "-._~/", "-_.!~*'()", "-._*"];
    let mut out = Vec::new();
    for keep in KEEP {
        for plus in [false, true] {
            let mut upper = String::with_capacity(value.len() * 3);
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) {
                    upper.push(char::from(b));
                } else if b == b' ' && plus {
                    upper.push('+');
                } else {
                    upper.push_str(&format!("%{b:02X}"));
                }
            }
            out.push(lower_hex_escapes(&upper, '%', 2));
            out.push(upper);
        }
    }
    out
}

/// JSON string escapes as serde and JavaScript write them, ASCII-only
/// (`\u00e9`, surrogate pairs for the rest) in either hex case, and with `/`
/// escaped.
fn json_forms(value: &str) -> Vec<String> {
    let plain = serde_json::to_string(value).unwrap_or_default();
    let plain = plain
        .get(1..plain.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned();
    let mut ascii = String::with_capacity(plain.len());
    for c in plain.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    let upper = upper_hex_escapes(&ascii);
    let mut out = vec![plain, ascii, upper];
    let slashed: Vec<String> = out.iter().map(|f| f.replace('/', "\\/")).collect();
    out.extend(slashed);
    out
}

/// The text with each `\uXXXX` escape's hex in upper case.
fn upper_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i + 2]);
        let hex = rest.get(i + 2..i + 6).unwrap_or_default();
        out.push_str(&hex.to_uppercase());
        rest = &rest[(i + 2 + hex.len()).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// The text with the hex digits after each `marker` in lower case.
fn lower_hex_escapes(s: &str, marker: char, digits: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut left = 0;
    for c in s.chars() {
        if c == marker {
            left = digits;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces every occurrence of any secret (in any of its [`forms`]) with
/// [`MASK`]. Values a step registers while the run goes on
/// ([`Masker::add`]) are masked from then on.
#[derive(Debug, Default)]
pub struct Masker {
    inner: std::sync::RwLock<Inner>,
    /// Values registered while the run goes on, not yet journalled (sealed
    /// under the mask key, so that resume masks them again).
    fresh: std::sync::Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Inner {
    values: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl Inner {
    fn build(values: Vec<String>) -> Inner {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
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
        let all = values.into_iter().flat_map(all_forms).collect();
        Masker {
            inner: std::sync::RwLock::new(Inner::build(all)),
            fresh: std::sync::Mutex::default(),
        }
    }

    /// The values registered since the last call (for the journal).
    pub fn take_fresh(&self) -> Vec<String> {
        self.fresh
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }

    /// Masks `value` (and its forms) from now on: a value a step registered
    /// as secret (`::add-mask::VALUE`).
    pub fn add(&self, value: &str) {
        self.extend(&[value.to_owned()]);
    }

    /// Masks a whole value from now on: a text, or each text and number
    /// inside a structure (a secret `json` output is journalled as a
    /// structure, not as its text) and its JSON text.
    pub fn add_all(&self, value: &Json) {
        fn texts(v: &Json, out: &mut Vec<String>) {
            match v {
                Json::String(s) => out.push(s.clone()),
                Json::Null | Json::Bool(_) => {}
                // A short number would mask every count in the run.
                Json::Number(n) if n.to_string().len() < MIN_PARTIAL => {}
                Json::Number(n) => out.push(n.to_string()),
                Json::Array(items) => {
                    items.iter().for_each(|x| texts(x, out));
                    out.push(v.to_string());
                }
                Json::Object(map) => {
                    map.values().for_each(|x| texts(x, out));
                    out.push(v.to_string());
                }
            }
        }
        let mut all = Vec::new();
        texts(value, &mut all);
        self.extend(&all);
    }

    /// Masks each of these values (and their forms) from now on.
    fn extend(&self, values: &[String]) {
        let forms: Vec<String> = values.iter().flat_map(|v| all_forms(v)).collect();
        if forms.is_empty() {
            return;
        }
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.extend(values.iter().filter(|v| !v.is_empty()).cloned());
        }
        if let Ok(mut inner) = self.inner.write() {
            let mut known = std::mem::take(&mut inner.values);
            known.extend(forms);
            *inner = Inner::build(known);
        }
    }

    /// Masks a text.
    pub fn text(&self, s: &str) -> String {
        match self.inner.read().ok().as_ref().and_then(|i| i.matcher.as_ref()) {
            Some(m) => m.replace_all(s, &vec![MASK; m.patterns_len()]),
            None => s.to_owned(),
        }
    }

    /// Masks a text that was cut short (a step's output kept up to
    /// `max_output`): a secret the cut went through leaves its first part at
    /// the end, which is masked too.
    pub fn text_cut(&self, s: &str) -> String {
        let masked = self.text(s);
        let Ok(inner) = self.inner.read() else { return masked };
        let tail = inner
            .values
            .iter()
            .filter_map(|v| {
                (1..v.len())
                    .rev()
                    .filter(|&k| v.is_char_boundary(k))
                    .find(|&k| masked.ends_with(&v[..k]))
            })
            .max();
        match tail {
            Some(k) => format!("{}{MASK}", &masked[..masked.len() - k]),
            None => masked,
        }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.inner.read().map_or(true, |i| i.matcher.is_none())
    }

    /// Masks every string a journal event holds.
    pub fn event(&self, event: runbook_state::Event) -> runbook_state::Event {
        if self.is_empty() {
            return event;
        }
        // The event's own field names and its kind and status are the
        // engine's words, kept (a secret spelled like one of them would make
        // the event unreadable); everything else is masked, keys of the
        // values it carries included. So reading it back cannot fail.
        let Ok(Json::Object(fields)) = serde_json::to_value(&event) else {
            return event;
        };
        let masked: serde_json::Map<String, Json> = fields
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "event" || k == "status" {
                    v
                } else {
                    self.json(&v)
                };
                (k, v)
            })
            .collect();
        serde_json::from_value(Json::Object(masked)).unwrap_or(event)
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

/// A value's forms, and those of each of its lines when it has several (a
/// key file): logs come line by line.
fn all_forms(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    let mut out = forms(value);
    if value.contains('\n') {
        for line in value
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.len() >= MIN_PARTIAL)
        {
            out.extend(forms(line));
        }
    }
    out
}

/// The runner's key for the values a run registers as secret: they are
/// journalled sealed with it (ChaCha20-Poly1305, a random nonce each), never in
/// clear, and resume opens them to mask them again.
pub struct MaskKey(ring::aead::LessSafeKey);

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

impl MaskKey {
    /// The key's length in bytes.
    pub const LEN: usize = 32;

    /// A key from its bytes.
    pub fn new(bytes: &[u8; Self::LEN]) -> Option<MaskKey> {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, bytes).ok()?;
        Some(MaskKey(ring::aead::LessSafeKey::new(key)))
    }

    /// A new random key's bytes.
    pub fn generate() -> Option<[u8; Self::LEN]> {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; Self::LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
        Some(bytes)
    }

    /// The value sealed: base64 of the nonce and the ciphertext.
    pub fn seal(&self, value: &str) -> Option<String> {
        use base64::Engine as _;
        use ring::rand::SecureRandom as _;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut nonce).ok()?;
        let mut data = value.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Some(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// A sealed value opened; `None` when it was sealed under another key.
    pub fn open(&self, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
        let (nonce, data) = bytes.split_at_checked(ring::aead::NONCE_LEN)?;
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self.0.open_in_place(nonce, ring::aead::Aad::empty(), &mut data).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// How a sealed value refers to a secret: `SEAL` + name + `SEAL`.
const SEAL: char = '\u{1}';

/// A value with each occurrence of a secret's value replaced by a reference
/// to the secret's name (what the journal keeps so that resume can give steps
/// the real value: [`unseal`] with the secrets fetched again); `None` when it
/// holds no secret. Other forms of a secret in it (its base64...) are masked,
/// for good.
pub fn seal(value: &Json, secrets: &indexmap::IndexMap<String, String>) -> Option<Json> {
    let mut named: Vec<(&str, &str)> = secrets
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // A secret that contains another is replaced whole.
    named.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut found = false;
    let masker = Masker::new(named.iter().map(|(_, v)| *v));
    let sealed = map_strings(value, &mut |s| {
        let mut out = s.to_owned();
        for (name, secret) in &named {
            if out.contains(secret) {
                found = true;
                out = out.replace(secret, &format!("{SEAL}{name}{SEAL}"));
            }
        }
        // What is left of a secret is a derived form: masked.
        let masked = masker.text(&out);
        found |= masked != out;
        masked
    });
    found.then_some(sealed)
}

/// A sealed value ([`seal`]) with each reference replaced by the secret's
/// value now; a secret no longer declared reads [`MASK`].
pub fn unseal(value: &Json, secrets: &indexmap::IndexMap<String, String>) -> Json {
    map_strings(value, &mut |s| {
        let mut parts = s.split(SEAL);
        let mut out = parts.next().unwrap_or_default().to_owned();
        while let Some(name) = parts.next() {
            out.push_str(secrets.get(name).map_or(MASK, String::as_str));
            out.push_str(parts.next().unwrap_or_default());
        }
        out
    })
}

/// The value with every string (keys left as they are) mapped by `f`.
fn map_strings(v: &Json, f: &mut impl FnMut(&str) -> String) -> Json {
    match v {
        Json::String(s) => Json::String(f(s)),
        Json::Array(a) => Json::Array(a.iter().map(|x| map_strings(x, f)).collect()),
        Json::Object(m) => Json::Object(m.iter().map(|(k, x)| (k.clone(), map_strings(x, f))).collect()),
        other => other.clone(),
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

    /// A secret's encodings as the tools a step pipes it through print
    /// them, each computed here the way that tool does it.
    fn encodings(s: &str) -> Vec<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let url = |keep: &str, plus: bool, lower: bool| -> String {
            s.bytes()
                .map(|b| match b {
                    b' ' if plus => "+".to_owned(),
                    b if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) => char::from(b).to_string(),
                    b if lower => format!("%{b:02x}"),
                    b => format!("%{b:02X}"),
                })
                .collect()
        };
        let json = serde_json::to_string(s).unwrap();
        let ascii: String = json[1..json.len() - 1]
            .chars()
            .flat_map(|c| {
                if c.is_ascii() {
                    vec![c.to_string()]
                } else {
                    let mut u = [0u16; 2];
                    c.encode_utf16(&mut u).iter().map(|x| format!("\\u{x:04x}")).collect()
                }
            })
            .collect();
        vec![
            STANDARD.encode(s),
            URL_SAFE_NO_PAD.encode(format!("{s}\n")),
            url("-._~/", false, false),         // Python's quote
            url("-._~", true, false),           // Python's quote_plus
            url("-._~", false, false),          // jq @uri, curl
            url("-_.!~*'()", false, false),     // encodeURIComponent
            url("-._~", false, true),           // lower-case hex
            json[1..json.len() - 1].to_owned(), // serde, JSON.stringify
            ascii.clone(),                      // json.dumps (ASCII only)
            ascii.replace('/', "\\/"),          // PHP's json_encode
            s.bytes().map(|b| format!("{b:02x}")).collect(),
            s.bytes().map(|b| format!("{b:02X}")).collect(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Whatever the secret (ASCII or not, with the characters URL and
        /// JSON encoders treat specially), each of its encodings is masked
        /// wherever it appears in a line; and behind a prefix, base64 keeps
        /// no character that only the secret determines.
        #[test]
        fn every_encoding_of_a_secret_is_masked_wherever_it_stands(
            secret in "[A-Za-z0-9/+=&%~._ -]{6,24}|[\\PC]{4,12}",
            before in "[ -~]{0,10}",
            after in "[ -~]{0,10}",
            prefix in "[ -~]{0,5}",
            which in 0..12usize,
        ) {
            use base64::Engine as _;
            let m = Masker::new([secret.as_str()]);
            let form = encodings(&secret)[which].clone();
            let masked = m.text(&format!("{before}{form}{after}"));
            prop_assert!(!masked.contains(&form), "{:?} (form {}) still in {:?}", form, which, masked);
            for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
                let text = engine.encode(format!("{prefix}{secret}"));
                let (k, n) = (prefix.len(), secret.len());
                let only_secret = &text[(8 * k).div_ceil(6)..(8 * (k + n)) / 6];
                // Shorter runs would match ordinary text: not masked alone.
                if only_secret.len() >= MIN_PARTIAL {
                    let masked = m.text(&format!("{before}{text}{after}"));
                    prop_assert!(!masked.contains(only_secret), "{:?} still in {:?}", only_secret, masked);
                }
            }
        }

        /// Cut anywhere, a line keeps no first part of a secret at its end.
        #[test]
        fn a_cut_through_a_secret_leaves_none_of_it(
            secret in "[A-Za-z0-9]{8,20}",
            before in "[ -~]{0,10}",
            cut in 1..8usize,
        ) {
            let m = Masker::new([secret.as_str()]);
            let line = format!("{before}{}", &secret[..cut.min(secret.len() - 1)]);
            let masked = m.text_cut(&line);
            prop_assert!(masked.ends_with(MASK), "{:?}", masked);
            prop_assert!(!masked.contains(&secret[..cut.min(secret.len() - 1)].to_owned()) || before.contains(&secret[..cut.min(secret.len() - 1)]));
        }
    }

    proptest! {
        /// Whatever the value and where a secret stands in it, sealing keeps
        /// no secret and unsealing with the same secrets gives the value back.
        #[test]
        fn a_sealed_value_holds_no_secret_and_unseals_to_itself(
            secret in "[A-Za-z0-9/+=&%~._ -]{6,20}",
            parts in proptest::collection::vec("[ -~]{0,8}", 1..4),
        ) {
            let secrets: indexmap::IndexMap<String, String> = [("DB_PASSWORD".to_owned(), secret.clone())].into();
            let text = parts.join(&secret);
            let value = json!({ "url": text, "items": [text.clone(), 3] });
            match seal(&value, &secrets) {
                Some(sealed) => {
                    prop_assert!(!sealed.to_string().contains(&secret), "{}", sealed);
                    prop_assert_eq!(unseal(&sealed, &secrets), value);
                }
                None => prop_assert!(!text.contains(&secret)),
            }
        }
    }

    #[test]
    fn a_registered_value_is_sealed_under_the_key_and_opens_only_with_it() {
        let key = MaskKey::new(&MaskKey::generate().expect("random")).expect("key");
        let other = MaskKey::new(&MaskKey::generate().expect("random")).expect("key");
        let sealed = key.seal("gen-pw-99").expect("seals");
        assert!(!sealed.contains("gen-pw-99"));
        assert_ne!(
            key.seal("gen-pw-99"),
            Some(sealed.clone()),
            "a nonce of its own each time"
        );
        assert_eq!(key.open(&sealed).as_deref(), Some("gen-pw-99"));
        assert_eq!(other.open(&sealed), None);
        let m = Masker::new(["hunter2"]);
        assert!(m.take_fresh().is_empty(), "declared secrets are not journalled");
        m.add("gen-pw-99");
        m.add_all(&json!({ "token": "tok-1", "n": 1234567 }));
        assert_eq!(m.take_fresh()[0], "gen-pw-99");
        assert!(m.take_fresh().is_empty(), "each once");
    }

    #[test]
    fn an_event_is_masked_whatever_the_secret_is_spelled_like() {
        for secret in ["step", "attempt", "error", "succeeded", "s3cret"] {
            let m = Masker::new([secret]);
            let e = m.event(runbook_state::Event::StepFailed {
                step: format!("deploy-{secret}"),
                attempt: 1,
                error: format!("bad {secret}"),
                will_retry: false,
            });
            let text = serde_json::to_string(&e).expect("json");
            assert!(
                text.contains("deploy-***") && text.contains("bad ***"),
                "{secret}: {text}"
            );
        }
    }

    #[test]
    fn a_sealed_secret_that_is_gone_reads_as_masked() {
        let secrets: indexmap::IndexMap<String, String> = [("PW".to_owned(), "hunter2".to_owned())].into();
        let sealed = seal(&json!("u:hunter2@db"), &secrets).expect("holds one");
        assert_eq!(unseal(&sealed, &indexmap::IndexMap::new()), json!("u:***@db"));
        assert_eq!(seal(&json!("nothing here"), &secrets), None);
    }

    #[test]
    fn a_secret_of_several_lines_is_masked_line_by_line() {
        let m = Masker::new(["-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\n-----END KEY-----\n"]);
        assert_eq!(m.text("AAAAB3NzaC1yc2EAAAADAQAB"), "***");
        assert_eq!(m.text("-----END KEY-----"), "***");
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
