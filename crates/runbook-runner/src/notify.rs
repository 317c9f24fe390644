//! A playbook's `notify:` (and `runbook.toml`'s `[[notify]]`): each hook
//! hears about the moments it asked for
//! (started, waiting for an approval, failed, succeeded), from whichever
//! runner executes the run. A webhook gets a POST of JSON with a
//! Slack-compatible `text`, signed with HMAC-SHA256 when the hook names a
//! secret; an email goes over SMTP. Both are retried with backoff; each hook
//! hears the moments in the order they happened (one sender per hook), never
//! in the way of the run, and awaited (for a bounded time) before the runner
//! lets the run go.

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
    /// A notification to send.
    Post(Told),
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

/// One notification: the JSON body of a webhook, and what an email says.
#[derive(Clone)]
struct Told {
    body: String,
    subject: String,
    text: String,
}

/// Where a hook's notifications go.
enum Target {
    /// POSTed, signed under the key if there is one.
    Webhook { url: String, key: Option<String> },
    /// Mailed over the SMTP server at `smtp` (a URL).
    Email {
        email: runbook_core::model::Email,
        smtp: Option<String>,
    },
}

impl Target {
    /// Where, for people (no password).
    fn shown(&self) -> String {
        match self {
            Target::Webhook { url, .. } => url.clone(),
            Target::Email { email, .. } => format!("mailto:{}", email.to.join(",")),
        }
    }

    /// Sends one notification, with retries.
    async fn send(&self, told: Told) -> Result<(), String> {
        match self {
            Target::Webhook { url, key } => {
                let signed = key.as_deref().map(|k| signature(k, told.body.as_bytes()));
                post(url, told.body, signed).await
            }
            Target::Email { email, smtp } => {
                let smtp = smtp
                    .as_deref()
                    .ok_or("no SMTP server: set `smtp:` on the notification or RUNBOOK_SMTP_URL")?;
                retried(|| mail(smtp, email, &told)).await
            }
        }
    }
}

/// Sends a hook's notifications one after the other, each tried until it is
/// taken.
fn sender(target: Target, watcher: Arc<dyn Watcher>) -> tokio::sync::mpsc::UnboundedSender<Msg> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Post(told) => {
                    if let Err(why) = target.send(told).await {
                        watcher.notice(&Notice::NotifyFailed {
                            url: target.shown(),
                            why,
                        });
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
    /// `smtp` is the runner's SMTP server for emails that name none.
    pub(crate) fn new(
        inner: Arc<dyn Watcher>,
        playbook: &str,
        notify: Vec<(Notify, Option<String>)>,
        smtp: Option<&str>,
    ) -> Option<Arc<Notifier>> {
        let hooks: Vec<Hook> = notify
            .into_iter()
            .filter_map(|(n, key)| {
                let target = match (n.webhook, n.email) {
                    (Some(url), _) => Target::Webhook { url, key },
                    (None, Some(email)) => Target::Email {
                        smtp: email.smtp.clone().or_else(|| smtp.map(str::to_owned)),
                        email,
                    },
                    (None, None) => return None,
                };
                Some(Hook {
                    on: n.on,
                    tx: sender(target, inner.clone()),
                })
            })
            .collect();
        if hooks.is_empty() {
            return None;
        }
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

/// Tries `once` up to [`TRIES`] times with backoff; why not, after the last try.
async fn retried<F, Fut>(once: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for attempt in 1..=TRIES {
        match once().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if attempt < TRIES {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Err(format!("{last} (after {TRIES} tries)"))
}

/// POSTs `body` to `url`, trying again with backoff.
async fn post(url: &str, body: String, signed: Option<String>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    retried(|| async {
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(s) = &signed {
            req = req.header("x-runbook-signature", s);
        }
        req.send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// Sends one email through the SMTP server at the URL `smtp`.
async fn mail(smtp: &str, email: &runbook_core::model::Email, told: &Told) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from = match &email.from {
        Some(f) => f.clone(),
        None => format!(
            "runbook@{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned())
        ),
    };
    let mut message = Message::builder()
        .from(from.parse().map_err(|e| format!("`from` {from}: {e}"))?)
        .subject(&told.subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &email.to {
        message = message.to(to.parse().map_err(|e| format!("`to` {to}: {e}"))?);
    }
    let message = message.body(told.text.clone()).map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
        .map_err(|e| format!("the SMTP URL: {e}"))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| runbook_core::kind::error_chain(&e))
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
        let subject = format!("runbook: {} run {run} {word}", self.playbook);
        let body = json!({
            "text": subject,
            "playbook": self.playbook,
            "run": run,
            "event": moment,
            "step": step,
            "status": status.map(RunStatus::as_str),
        })
        .to_string();
        let next = match moment {
            RunMoment::Waiting => {
                let step = step.as_deref().map(runbook_core::shell::quote).unwrap_or_default();
                format!("\nTo answer: runbook approve {run} {step} (or runbook reject {run} {step})\n")
            }
            RunMoment::Failed => format!("\nWhat happened: runbook status {run}; runbook logs {run}\n"),
            _ => String::new(),
        };
        let text = format!(
            "{subject}\n\nplaybook: {}\nrun: {run}\n{}{}{next}",
            self.playbook,
            step.as_deref().map(|s| format!("step: {s}\n")).unwrap_or_default(),
            status.map(|s| format!("status: {}\n", s.as_str())).unwrap_or_default(),
        );
        let told = Told { body, subject, text };
        for hook in self.hooks.iter().filter(|h| h.on.contains(&moment)) {
            let _ = hook.tx.send(Msg::Post(told.clone()));
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
