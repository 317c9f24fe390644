//! The `lb` step kind: taking servers in and out of a load balancer pool safely.
//!
//! Actions (`register`, `deregister`, `drain`, `ready`, `wait-drained`,
//! `wait-healthy`, `switch`, `active`, `split`, `status`) are written once,
//! over the [`Driver`] trait; a driver only reads a pool, changes one server,
//! points the traffic at one side or splits it between two. Every action is
//! idempotent (draining a drained server succeeds and says nothing changed) and
//! reports the server's state before and after.
//!
//! Drivers: `haproxy` (our own runtime API client, [`haproxy`]) and, with the
//! `aws` feature, `aws-elbv2` (the official SDK, `elbv2`).
//!
//! This crate depends only on `runbook-core`, never on the engine.

#[cfg(feature = "aws")]
mod elbv2;
mod haproxy;

use runbook_core::kind::{
    CancellationToken, Effect, LogStream, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind,
    UNKNOWN_YET, duration_param, params, plan_params, require_by_action, schema_for,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Changes or reads a load balancer pool.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LbParams {
    /// Which load balancer: `haproxy` (runtime API) or `aws-elbv2`.
    #[serde(default)]
    pub driver: DriverName,
    /// What to do.
    pub action: Action,
    /// The server: a HAProxy server name, or an ELB target (instance id or IP).
    /// Needed by every action but `status` and `switch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// HAProxy: the backend holding the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// HAProxy: the runtime API, a unix socket path or `host:port` (default `/run/haproxy/admin.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// HAProxy: haproxy.cfg, read to tell whether runtime changes survive a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// `switch` with HAProxy: the map file that `use_backend` reads (as loaded in haproxy.cfg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// `switch` with HAProxy: the key in the map (default `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `split`: the percent of the traffic `to` gets (`25` or `"25%"`); `from` gets the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "share_schema")]
    pub share: Option<Share>,
    /// `switch` and `active`: where traffic must go now: `switch` refuses, changing nothing, unless it goes to `from` (or already to `to`); `active` fails unless it goes to `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `switch`: where traffic goes afterwards (HAProxy: the backend name the map points to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// aws-elbv2: the target group ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    /// aws-elbv2: the target's port (when the target group needs one per target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// aws-elbv2 `switch`: the listener ARN whose default action is switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// aws-elbv2: the region (default: the standard chain, AWS_REGION or the profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// aws-elbv2: an endpoint URL instead of AWS's (a local moto server, a VPC endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `wait-drained` and `wait-healthy`: the longest to wait (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// `wait-drained` and `wait-healthy`: how often to look (default `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub interval: Option<String>,
}

/// A share of the traffic: a number of percent, or a text like `25%`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Share {
    /// `25`
    Percent(f64),
    /// `"25%"`
    Text(String),
}

/// One schema for both forms of a share (so that a wrong one is told in
/// words, not as "none of anyOf"): a number from 0 to 100, or its text with
/// an optional `%`.
fn share_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "`split`: the percent of the traffic `to` gets (`25` or `\"25%\"`); `from` gets the rest.",
        "type": ["number", "string"],
        "minimum": 0,
        "maximum": 100,
        "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%?\\s*$"
    })
}

impl Share {
    /// The percent, from 0 to 100.
    fn percent(&self) -> Result<f64, StepError> {
        let n = match self {
            Share::Percent(n) => Some(*n),
            Share::Text(t) => t.trim().trim_end_matches('%').trim().parse().ok(),
        };
        n.filter(|n: &f64| (0.0..=100.0).contains(n)).ok_or_else(|| {
            StepError::new(format!(
                "`share` must be a percent from 0 to 100 (e.g. 25 or \"25%\"), not {}",
                match self {
                    Share::Percent(n) => n.to_string(),
                    Share::Text(t) => format!("`{t}`"),
                }
            ))
        })
    }
}

/// The load balancer driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DriverName {
    /// HAProxy through its runtime API.
    #[default]
    Haproxy,
    /// An AWS ALB/NLB target group (the official SDK).
    #[serde(rename = "aws-elbv2")]
    AwsElbv2,
}

/// An `lb` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Put the server in the pool (HAProxy: state ready).
    Register,
    /// Take the server out of the pool at once (HAProxy: state maint).
    Deregister,
    /// Stop new sessions to the server; current ones finish (HAProxy: state drain).
    Drain,
    /// Let the server take traffic again (HAProxy: state ready).
    Ready,
    /// Wait until the server has no sessions left.
    WaitDrained,
    /// Wait until the load balancer itself reports the server healthy.
    WaitHealthy,
    /// Blue-green: send the traffic to `to` (with `from`: only if it goes to `from` or already to `to`).
    Switch,
    /// Blue-green: read where the traffic goes now (the `target` output); with `from`, fail unless it goes there.
    Active,
    /// Blue-green ramp: send `share` percent of the traffic to `to` and the rest to `from` (HAProxy: server
    /// weights in `backend`, a backend holding the servers of both; aws-elbv2: the listener's weighted target
    /// groups). Refuses, changing nothing, when traffic could go anywhere else.
    Split,
    /// Report every server of the pool.
    Status,
}

impl DriverName {
    fn as_str(self) -> &'static str {
        match self {
            DriverName::Haproxy => "haproxy",
            DriverName::AwsElbv2 => "aws-elbv2",
        }
    }
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::Deregister => "deregister",
            Action::Drain => "drain",
            Action::Ready => "ready",
            Action::WaitDrained => "wait-drained",
            Action::WaitHealthy => "wait-healthy",
            Action::Switch => "switch",
            Action::Active => "active",
            Action::Split => "split",
            Action::Status => "status",
        }
    }
}

/// Whether a server takes new traffic, as the operator set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admin {
    Ready,
    Drain,
    Maint,
}

impl Admin {
    fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

/// Whether the load balancer's own health check passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Up,
    Down,
    /// The load balancer does not check this server.
    Unchecked,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unchecked => "unchecked",
        }
    }
}

/// One server of a pool, as the driver sees it.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    name: String,
    admin: Admin,
    health: Health,
    /// Sessions on the server, including queued ones; None where the load
    /// balancer does not count them (AWS ELB).
    sessions: Option<u64>,
    weight: Option<u32>,
    /// The driver's own words for the state (HAProxy's status column).
    detail: String,
}

impl Server {
    /// `web1: ready up 3 sessions (UP)`, as status and `plan --live` show it.
    fn line(&self) -> String {
        format!(
            "{}: {} {} {} ({})",
            self.name,
            self.admin.as_str(),
            self.health.as_str(),
            self.load(),
            self.detail
        )
    }

    fn to_json(&self) -> Json {
        json!({
            "server": self.name,
            "state": self.admin.as_str(),
            "health": self.health.as_str(),
            "sessions": self.sessions,
            "weight": self.weight,
            "detail": self.detail,
        })
    }

    /// `3 sessions`, or the driver's words where sessions are not counted.
    fn load(&self) -> String {
        match self.sessions {
            Some(n) => format!("{n} sessions"),
            None => self.detail.clone(),
        }
    }
}

/// How the traffic is split between two sides (`split`), as the driver sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    /// The percent of the traffic `to` gets, from the weights.
    to_share: f64,
    /// The weight of each server (HAProxy) or target group (aws-elbv2).
    weights: BTreeMap<String, u32>,
}

impl Split {
    fn to_json(&self) -> Json {
        json!({ "share": self.to_share, "weights": self.weights })
    }
}

/// What a load balancer must offer; the actions are built on it.
#[async_trait::async_trait]
pub(crate) trait Driver: Send + Sync {
    /// The pool, for messages (`haproxy app`).
    fn pool(&self) -> String;
    /// Every server of the pool.
    async fn servers(&self) -> Result<Vec<Server>, String>;
    /// One server; by default, found among [`Driver::servers`].
    async fn server(&self, name: &str) -> Result<Server, String> {
        let all = self.servers().await?;
        let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
        all.into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{} has no server `{name}` (it has: {})", self.pool(), names.join(", ")))
    }
    /// Whether the server has nothing left in flight; by default, no sessions.
    fn drained(&self, s: &Server) -> bool {
        s.sessions == Some(0)
    }
    /// Sets one server's admin state.
    async fn set(&self, server: &str, admin: Admin) -> Result<(), String>;
    /// Blue-green: where the traffic goes now (empty when unset).
    async fn active(&self, map: Option<&str>, key: Option<&str>) -> Result<String, String>;
    /// Blue-green: points the traffic at `to`; returns (before, after).
    async fn switch(&self, map: Option<&str>, key: Option<&str>, to: &str) -> Result<(String, String), String>;
    /// Blue-green ramp: how the traffic is split between `from` and `to`; an
    /// error when it could go anywhere else.
    async fn split(&self, from: &str, to: &str) -> Result<Split, String>;
    /// Blue-green ramp: gives `to` `share` percent of the traffic, `from` the rest.
    async fn set_split(&self, from: &str, to: &str, share: f64) -> Result<(), String>;
    /// A warning about the pool's configuration, if any (HAProxy's reload caveat).
    fn caveat(&self) -> Option<String>;
}

/// The `lb` kind.
#[derive(Debug, Default)]
pub struct Lb;

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new(
        "state",
        OutputType::String,
        "the server's state afterwards: ready, drain or maint",
    ),
    OutputDecl::new(
        "health",
        OutputType::String,
        "the load balancer's health check afterwards: up, down or unchecked",
    ),
    OutputDecl::new(
        "sessions",
        OutputType::Integer,
        "sessions on the server afterwards, with queued ones (null where not counted: aws-elbv2)",
    ),
    OutputDecl::new(
        "before",
        OutputType::Any,
        "the server (or, for switch, the target) before the action",
    ),
    OutputDecl::new(
        "after",
        OutputType::Any,
        "the server (or, for switch, the target) after the action",
    ),
    OutputDecl::new(
        "changed",
        OutputType::Boolean,
        "false when the server was already as asked",
    ),
    OutputDecl::new("servers", OutputType::List, "status: every server of the pool"),
    OutputDecl::new(
        "share",
        OutputType::Number,
        "split: the percent of the traffic `to` gets afterwards",
    ),
    OutputDecl::new(
        "waited_ms",
        OutputType::Integer,
        "wait-drained and wait-healthy: how long it took",
    ),
    OutputDecl::new(
        "warning",
        OutputType::String,
        "status: a configuration risk, e.g. changes lost on reload",
    ),
];

async fn driver(p: &LbParams) -> Result<Box<dyn Driver>, StepError> {
    match p.driver {
        #[cfg(feature = "aws")]
        DriverName::AwsElbv2 => Ok(Box::new(
            elbv2::Elbv2::new(
                p.target_group
                    .clone()
                    .ok_or_else(|| StepError::new("the aws-elbv2 driver needs `target_group` (an ARN)"))?,
                p.port,
                p.listener.clone(),
                p.region.clone(),
                p.endpoint.clone(),
            )
            .await,
        )),
        #[cfg(not(feature = "aws"))]
        DriverName::AwsElbv2 => Err(StepError::new(
            "this runbook was built without the aws-elbv2 driver (cargo feature `aws` of runbook-step-lb)",
        )),
        DriverName::Haproxy => Ok(Box::new(haproxy::HaProxy {
            socket: p.socket.clone().unwrap_or_else(|| "/run/haproxy/admin.sock".to_owned()),
            // A switch rewrites a map; it names no backend of its own.
            // (A split's backend is the one holding both sides' servers.)
            backend: p
                .backend
                .clone()
                .or_else(|| matches!(p.action, Action::Switch | Action::Active).then(String::new))
                .ok_or_else(|| StepError::new("the haproxy driver needs `backend`"))?,
            config: p.config.clone(),
        })),
    }
}

async fn find(d: &dyn Driver, server: &str) -> Result<Server, StepError> {
    d.server(server).await.map_err(StepError::new)
}

fn server_outputs(before: &Server, after: &Server) -> Outputs {
    let mut out = Outputs::new();
    out.insert("state".into(), json!(after.admin.as_str()));
    out.insert("health".into(), json!(after.health.as_str()));
    out.insert("sessions".into(), json!(after.sessions));
    out.insert("before".into(), before.to_json());
    out.insert("after".into(), after.to_json());
    out.insert("changed".into(), json!(before.admin != after.admin));
    out
}

#[async_trait::async_trait]
impl StepKind for Lb {
    fn name(&self) -> &'static str {
        "lb"
    }

    fn summary(&self) -> &'static str {
        "Drains, enables, waits on and switches load balancer servers (HAProxy runtime API, AWS ELBv2)"
    }

    fn params_schema(&self) -> Json {
        let server_actions: &[&str] = &[
            "register",
            "deregister",
            "drain",
            "ready",
            "wait-drained",
            "wait-healthy",
        ];
        require_by_action(
            schema_for::<LbParams>(),
            &[
                (server_actions, &["server"]),
                (&["switch"], &["to"]),
                (&["split"], &["from", "to", "share"]),
            ],
        )
    }

    fn effect(&self, with: &Json) -> Effect {
        match plan_params::<LbParams>(with).map(|p| p.action) {
            Some(Action::Status | Action::Active | Action::WaitDrained | Action::WaitHealthy) => Effect::Read,
            Some(_) => Effect::Write,
            None => Effect::Unknown,
        }
    }

    fn idempotent(&self, _with: &Json) -> bool {
        true
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<LbParams>(with) else {
            return format!("a load balancer action {UNKNOWN_YET}");
        };
        let driver = p.driver.as_str();
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
        let pool = or_unknown(&p.backend.clone().or(p.target_group.clone()));
        match (p.action, &p.from) {
            (Action::Status, _) => format!("{driver}: status of {pool}"),
            (Action::Switch, Some(from)) => format!("{driver}: switch traffic from {from} to {}", or_unknown(&p.to)),
            (Action::Switch, None) => format!("{driver}: switch traffic to {}", or_unknown(&p.to)),
            (Action::Active, Some(from)) => format!("{driver}: check traffic goes to {from}"),
            (Action::Active, None) => format!("{driver}: where traffic goes"),
            (Action::Split, from) => {
                let share = p.share.as_ref().and_then(|s| s.percent().ok());
                format!(
                    "{driver}{}: send {} of the traffic to {}, the rest to {}",
                    p.backend
                        .as_ref()
                        .filter(|b| !b.is_empty())
                        .map(|b| format!(" {b}"))
                        .unwrap_or_default(),
                    share.map_or_else(|| "?%".to_owned(), |s| format!("{s}%")),
                    or_unknown(&p.to),
                    or_unknown(from),
                )
            }
            (action, _) => format!("{driver}: {} {pool}/{}", action.as_str(), or_unknown(&p.server)),
        }
    }

    fn can_preview(&self, with: &Json) -> bool {
        plan_params::<LbParams>(with).is_some_and(|p| !matches!(p.action, Action::Switch | Action::Active))
    }

    async fn preview(&self, with: Json, cancel: &CancellationToken) -> Result<Option<Vec<String>>, StepError> {
        let p: LbParams = params(with)?;
        if matches!(p.action, Action::Switch | Action::Active) {
            return Ok(None);
        }
        let d = driver(&p).await?;
        if let (Action::Split, Some(from), Some(to)) = (p.action, &p.from, &p.to) {
            let look = async {
                let now = d.split(from, to).await.map_err(StepError::new)?;
                Ok(Some(vec![format!(
                    "now: {to} gets {} of the traffic, {from} the rest",
                    percent(now.to_share)
                )]))
            };
            return tokio::select! {
                r = look => r,
                () = cancel.cancelled() => Err(StepError::cancelled()),
            };
        }
        let look = async {
            let all = d.servers().await.map_err(StepError::new)?;
            let lines = all
                .iter()
                .filter(|s| p.server.as_deref().is_none_or(|name| s.name == name))
                .map(|s| format!("now: {}", s.line()))
                .collect::<Vec<_>>();
            match (&p.server, lines.is_empty()) {
                (Some(name), true) => Err(StepError::new(format!("{} has no server `{name}`", d.pool()))),
                _ => Ok(Some(lines)),
            }
        };
        tokio::select! {
            r = look => r,
            () = cancel.cancelled() => Err(StepError::cancelled()),
        }
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: LbParams = params(with)?;
        let d = driver(&p).await?;
        let work = act(ctx, &p, d.as_ref());
        tokio::select! {
            r = work => r,
            () = ctx.cancel.cancelled() => Err(StepError::cancelled()),
        }
    }
}

async fn act(ctx: &StepContext, p: &LbParams, d: &dyn Driver) -> Result<Outputs, StepError> {
    let say = |text: String| ctx.log.line(LogStream::Stdout, &text);
    let server = || {
        p.server
            .as_deref()
            .ok_or_else(|| StepError::new(format!("`{}` needs `server`", p.action.as_str())))
    };
    match p.action {
        Action::Register | Action::Ready => set_state(d, server()?, Admin::Ready, &say).await,
        Action::Deregister => set_state(d, server()?, Admin::Maint, &say).await,
        Action::Drain => set_state(d, server()?, Admin::Drain, &say).await,
        Action::WaitDrained | Action::WaitHealthy => wait(d, p, server()?, &say).await,
        Action::Status => {
            let all = d.servers().await.map_err(StepError::new)?;
            for s in &all {
                say(s.line());
            }
            let mut out = Outputs::new();
            out.insert("servers".into(), Json::Array(all.iter().map(Server::to_json).collect()));
            if let Some(w) = d.caveat() {
                say(format!("warning: {w}"));
                out.insert("warning".into(), json!(w));
            }
            Ok(out)
        }
        Action::Active => {
            let now = d
                .active(p.map.as_deref(), p.key.as_deref())
                .await
                .map_err(StepError::new)?;
            say(format!(
                "traffic goes to {}",
                if now.is_empty() { "(unset)" } else { &now }
            ));
            if let Some(from) = p.from.as_deref().filter(|f| *f != now) {
                return Err(StepError::new(format!(
                    "traffic goes to `{}`, not `{from}`: refusing, so that nothing live is touched (hint: set \
                     `from` to the live side)",
                    if now.is_empty() { "(unset)" } else { &now }
                )));
            }
            let mut out = Outputs::new();
            out.insert("target".into(), json!(now));
            Ok(out)
        }
        Action::Split => {
            let (from, to) = match (p.from.as_deref(), p.to.as_deref()) {
                (Some(from), Some(to)) if from != to => (from, to),
                _ => return Err(StepError::new("`split` needs `from` and `to`, two different sides")),
            };
            let share = p
                .share
                .as_ref()
                .ok_or_else(|| StepError::new("`split` needs `share`"))?
                .percent()?;
            let before = d.split(from, to).await.map_err(StepError::new)?;
            d.set_split(from, to, share).await.map_err(StepError::new)?;
            let after = d.split(from, to).await.map_err(StepError::new)?;
            say(format!(
                "{}: {to} {} -> {} of the traffic, {from} the rest ({})",
                d.pool(),
                percent(before.to_share),
                percent(after.to_share),
                after
                    .weights
                    .iter()
                    .map(|(k, w)| format!("{k} {w}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let mut out = Outputs::new();
            out.insert("share".into(), json!(after.to_share));
            out.insert("changed".into(), json!(before.weights != after.weights));
            out.insert("before".into(), before.to_json());
            out.insert("after".into(), after.to_json());
            Ok(out)
        }
        Action::Switch => {
            let to = p.to.as_deref().ok_or_else(|| StepError::new("`switch` needs `to`"))?;
            if let Some(from) = p.from.as_deref() {
                let now = d
                    .active(p.map.as_deref(), p.key.as_deref())
                    .await
                    .map_err(StepError::new)?;
                // A split between the two (a ramp under way) is theirs too.
                if now != from && now != to && d.split(from, to).await.is_err() {
                    return Err(StepError::new(format!(
                        "traffic goes to `{now}`, neither `{from}` nor `{to}`: refusing to switch (someone else \
                         changed it)"
                    )));
                }
            }
            let (before, after) = d
                .switch(p.map.as_deref(), p.key.as_deref(), to)
                .await
                .map_err(StepError::new)?;
            say(format!(
                "traffic: {} -> {after}",
                if before.is_empty() { "(unset)" } else { &before }
            ));
            let mut out = Outputs::new();
            out.insert("before".into(), json!({ "target": before }));
            out.insert("after".into(), json!({ "target": after }));
            out.insert("changed".into(), json!(before != after));
            Ok(out)
        }
    }
}

/// `25%`, `2.5%`: a share as people write it.
fn percent(share: f64) -> String {
    let rounded = (share * 10.0).round() / 10.0;
    format!("{rounded}%")
}

/// Puts a server in `admin` state unless it already is; before and after.
async fn set_state(
    d: &dyn Driver,
    name: &str,
    admin: Admin,
    say: &(dyn Fn(String) + Sync),
) -> Result<Outputs, StepError> {
    let before = find(d, name).await?;
    if before.admin != admin {
        d.set(name, admin).await.map_err(StepError::new)?;
    }
    let after = find(d, name).await?;
    say(format!(
        "{}/{name}: {} -> {} ({})",
        d.pool(),
        before.admin.as_str(),
        after.admin.as_str(),
        after.load()
    ));
    Ok(server_outputs(&before, &after))
}

/// `wait-drained` and `wait-healthy`: polls the server until it is there.
async fn wait(d: &dyn Driver, p: &LbParams, name: &str, say: &(dyn Fn(String) + Sync)) -> Result<Outputs, StepError> {
    let drain = p.action == Action::WaitDrained;
    let goal = if drain { "drained" } else { "healthy" };
    let timeout = duration_param("timeout", p.timeout.as_deref())?.unwrap_or(Duration::from_secs(300));
    let every = duration_param("interval", p.interval.as_deref())?.unwrap_or(Duration::from_millis(500));
    let start = Instant::now();
    let first = find(d, name).await?;
    let mut now = first.clone();
    let mut last_said = None;
    loop {
        let done = if drain {
            d.drained(&now)
        } else {
            now.admin == Admin::Ready && now.health != Health::Down
        };
        if done {
            let mut out = server_outputs(&first, &now);
            out.insert("changed".into(), json!(false));
            out.insert(
                "waited_ms".into(),
                json!(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)),
            );
            say(format!(
                "{}/{name}: {goal} after {:.1}s",
                d.pool(),
                start.elapsed().as_secs_f64()
            ));
            return Ok(out);
        }
        if drain && now.admin == Admin::Ready {
            return Err(StepError::new(format!(
                "{}/{name} is still taking new traffic (state ready): drain it first",
                d.pool()
            )));
        }
        if start.elapsed() >= timeout {
            return Err(StepError::new(format!(
                "{}/{name} not {goal} after {}: state {}, {}",
                d.pool(),
                p.timeout.as_deref().unwrap_or("5m"),
                now.admin.as_str(),
                now.load()
            ))
            .with_outputs(server_outputs(&first, &now)));
        }
        let line = format!("{}, {}", now.load(), now.detail);
        if last_said.as_ref() != Some(&line) {
            say(format!("{}/{name}: waiting: {line}", d.pool()));
            last_said = Some(line);
        }
        tokio::time::sleep(every).await;
        now = find(d, name).await?;
    }
}
