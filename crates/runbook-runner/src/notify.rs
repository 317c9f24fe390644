//! A playbook's `notify:` (and `runbook.toml`'s `[[notify]]`): each webhook
//! hears about the moments it asked for
//! (started, waiting for an approval, failed, succeeded), from whichever
//! runner executes the run. A POST of JSON with a Slack-compatible `text`,
//! signed with HMAC-SHA256 when the hook names a secret, retried with backoff;
//! each hook hears the moments in the order they happened (one sender per
//! hook), never in the way of the run, and awaited (for a bounded time) before
//! the runner lets the run go.

use crate::notice::{Notice, Watcher};
use runbook_core::model::{Notify, RunMoment};
use runbook_engine::exec::Observer;
use runbook_state::{Event, LogLine, RunStatus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How many times a notification is tried, and the first pause between
/// tries (doubled each time).
const TRIES: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest a runner waits for its notifications once the run stops.
const DRAIN: Duration = Duration::from_secs(20);

/// What a hook's sender is given, in order.
enum Msg {
    /// A body to POST.
    Post(String),
    /// Answered once everything before it was sent (or given up).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// One hook: what it hears, and its sender.
struct Hook {
    on: Vec<RunMoment>,
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
}

/// A watcher that also notifies the playbook's hooks.
pub(crate) struct Notifier {
    inner: Arc<dyn Watcher>,
    playbook: String,
    hooks: Vec<Hook>,
}

/// Sends a hook's bodies one after the other, each tried until it is taken.
fn sender(url: String, key: Option<String>, watcher: Arc<dyn Watcher>) -> tokio::sync::mpsc::UnboundedSender<Msg> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Post(body) => {
                    let signed = key.as_deref().map(|k| signature(k, body.as_bytes()));
                    if let Err(why) = post(&url, body, signed).await {
                        watcher.notice(&Notice::NotifyFailed { url: url.clone(), why });
                    }
                }
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    tx
}

impl Notifier {
    /// `None` when nobody is to be told. Each hook with the key its bodies
    /// are signed under, if any.
    pub(crate) fn new(
        inner: Arc<dyn Watcher>,
        playbook: &str,
        notify: Vec<(Notify, Option<String>)>,
    ) -> Option<Arc<Notifier>> {
        if notify.is_empty() {
            return None;
        }
        let hooks: Vec<Hook> = notify
            .into_iter()
            .map(|(n, key)| Hook {
                on: n.on,
                tx: sender(n.webhook, key, inner.clone()),
            })
            .collect();
        Some(Arc::new(Notifier {
            inner,
            playbook: playbook.to_owned(),
            hooks,
        }))
    }

    /// Waits (a bounded time) for the notifications sent so far.
    pub(crate) async fn drain(&self) {
        let all = async {
            for hook in &self.hooks {
                let (done, flushed) = tokio::sync::oneshot::channel();
                if hook.tx.send(Msg::Flush(done)).is_ok() {
                    let _ = flushed.await;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN, all).await;
    }

    fn moment(event: &Event) -> Option<(RunMoment, Option<String>, Option<RunStatus>)> {
        match event {
            Event::RunStarted { .. } => Some((RunMoment::Started, None, None)),
            Event::StepWaiting { step, .. } => Some((RunMoment::Waiting, Some(step.clone()), None)),
            Event::RunFinished {
                status: RunStatus::Succeeded,
                ..
            } => Some((RunMoment::Succeeded, None, Some(RunStatus::Succeeded))),
            Event::RunFinished { status, .. }
                if matches!(status, RunStatus::Failed | RunStatus::Cancelled | RunStatus::Uncertain) =>
            {
                Some((RunMoment::Failed, None, Some(*status)))
            }
            _ => None,
        }
    }
}

/// `sha256=HEX` of the body under `key`.
pub fn signature(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// POSTs `body` to `url`, trying again with backoff; why not, after the last try.
async fn post(url: &str, body: String, signed: Option<String>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(s) = &signed {
            req = req.header("x-runbook-signature", s);
        }
        match req.send().await.and_then(|r| r.error_for_status()) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        if attempt < TRIES {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Err(format!("{last} (after {TRIES} tries)"))
}

impl Observer for Notifier {
    fn event(&self, run: &str, event: &Event) {
        self.inner.event(run, event);
        let Some((moment, step, status)) = Notifier::moment(event) else {
            return;
        };
        let word = match moment {
            RunMoment::Started => "started".to_owned(),
            RunMoment::Waiting => format!("waits for an approval at `{}`", step.as_deref().unwrap_or("?")),
            RunMoment::Failed | RunMoment::Succeeded => status.map_or("ended", |s| s.as_str()).to_owned(),
        };
        let body = json!({
            "text": format!("runbook: {} run {run} {word}", self.playbook),
            "playbook": self.playbook,
            "run": run,
            "event": moment,
            "step": step,
            "status": status.map(RunStatus::as_str),
        })
        .to_string();
        for hook in self.hooks.iter().filter(|h| h.on.contains(&moment)) {
            let _ = hook.tx.send(Msg::Post(body.clone()));
        }
    }

    fn log(&self, line: &LogLine) {
        self.inner.log(line);
    }
}

impl Watcher for Notifier {
    fn notice(&self, notice: &Notice) {
        self.inner.notice(notice);
    }
}
