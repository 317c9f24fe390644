//! The `aws-elbv2` driver: an ALB/NLB target group through the official SDK, with
//! the standard credential chain. A "server" is a target (instance id or IP,
//! with `port`). Draining is deregistration (ELB drains for the target group's
//! deregistration delay); `deregister` also waits until the target is `unused`.

use crate::{Admin, Driver, Health, Server, Split};
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetDescription, TargetGroupTuple, TargetHealthStateEnum,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) struct Elbv2 {
    client: Client,
    target_group: String,
    port: Option<i32>,
    listener: Option<String>,
}

/// An SDK error in full (the SDK's own Display says only "service error").
fn sdk<E: std::error::Error>(what: &str, e: E) -> String {
    format!("AWS {what} failed: {}", DisplayErrorContext(e))
}

impl Elbv2 {
    pub(crate) async fn new(
        target_group: String,
        port: Option<u16>,
        listener: Option<String>,
        region: Option<String>,
        endpoint: Option<String>,
    ) -> Elbv2 {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        Elbv2 {
            client: Client::new(&config),
            target_group,
            port: port.map(i32::from),
            listener,
        }
    }

    fn target(&self, id: &str) -> Result<TargetDescription, String> {
        Ok(TargetDescription::builder().id(id).set_port(self.port).build())
    }

    /// The listener ARN, or an error saying `what` needs it.
    fn listener(&self, what: &str) -> Result<&str, String> {
        self.listener
            .as_deref()
            .ok_or_else(|| format!("aws-elbv2 {what} needs `listener` (the listener ARN)"))
    }

    /// Where the listener's default action forwards: each target group with
    /// its weight (one without weights counts as 1).
    async fn forwards(&self, what: &str) -> Result<BTreeMap<String, u32>, String> {
        let out = self
            .client
            .describe_listeners()
            .listener_arns(self.listener(what)?)
            .send()
            .await
            .map_err(|e| sdk("DescribeListeners", e))?;
        let Some(action) = out.listeners().first().and_then(|l| l.default_actions().first()) else {
            return Ok(BTreeMap::new());
        };
        let weighted = action.forward_config().map(ForwardActionConfig::target_groups);
        Ok(match (weighted, action.target_group_arn()) {
            (Some(groups), _) if !groups.is_empty() => groups
                .iter()
                .filter_map(|g| {
                    let weight = u32::try_from(g.weight().unwrap_or(1)).unwrap_or(0);
                    Some((g.target_group_arn()?.to_owned(), weight))
                })
                .collect(),
            (_, Some(arn)) => BTreeMap::from([(arn.to_owned(), 1)]),
            _ => BTreeMap::new(),
        })
    }

    /// Makes `action` the listener's default action (ModifyListener).
    async fn forward(&self, listener: &str, action: Action) -> Result<(), String> {
        self.client
            .modify_listener()
            .listener_arn(listener)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| sdk("ModifyListener", e))?;
        Ok(())
    }

    /// The target group's deregistration delay (how long ELB drains).
    async fn deregistration_delay(&self) -> Result<Duration, String> {
        let out = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(&self.target_group)
            .send()
            .await
            .map_err(|e| sdk("DescribeTargetGroupAttributes", e))?;
        let secs = out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        Ok(Duration::from_secs(secs))
    }
}

fn server_of(id: &str, state: Option<&TargetHealthStateEnum>, reason: &str) -> Server {
    let (admin, health) = match state {
        Some(TargetHealthStateEnum::Healthy) => (Admin::Ready, Health::Up),
        Some(TargetHealthStateEnum::Draining) => (Admin::Drain, Health::Down),
        Some(TargetHealthStateEnum::Unused | TargetHealthStateEnum::Unavailable)
            if reason.contains("NotRegistered") =>
        {
            (Admin::Maint, Health::Down)
        }
        Some(TargetHealthStateEnum::Unused) => (Admin::Ready, Health::Down),
        _ => (Admin::Ready, Health::Down),
    };
    Server {
        name: id.to_owned(),
        admin,
        health,
        // ELB does not say how many connections a target still has.
        sessions: None,
        weight: None,
        detail: format!(
            "{}{}",
            state.map_or("unknown", |s| s.as_str()),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        ),
    }
}

#[async_trait::async_trait]
impl Driver for Elbv2 {
    fn pool(&self) -> String {
        let short = self.target_group.rsplit(':').next().unwrap_or(&self.target_group);
        format!("aws-elbv2 {short}")
    }

    async fn servers(&self) -> Result<Vec<Server>, String> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(&self.target_group)
            .send()
            .await
            .map_err(|e| sdk("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let id = d.target().and_then(|t| t.id()).unwrap_or("?");
                let h = d.target_health();
                let reason = h
                    .and_then(|h| h.reason())
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                server_of(id, h.and_then(|h| h.state()), &reason)
            })
            .collect())
    }

    async fn server(&self, name: &str) -> Result<Server, String> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(&self.target_group)
            .targets(self.target(name)?)
            .send()
            .await
            .map_err(|e| sdk("DescribeTargetHealth", e))?;
        let d = out
            .target_health_descriptions()
            .first()
            .ok_or_else(|| format!("{} does not know target {name}", self.pool()))?;
        let h = d.target_health();
        let reason = h
            .and_then(|h| h.reason())
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        Ok(server_of(name, h.and_then(|h| h.state()), &reason))
    }

    async fn set(&self, server: &str, admin: Admin) -> Result<(), String> {
        let target = self.target(server)?;
        match admin {
            Admin::Ready => {
                self.client
                    .register_targets()
                    .target_group_arn(&self.target_group)
                    .targets(target)
                    .send()
                    .await
                    .map_err(|e| sdk("RegisterTargets", e))?;
            }
            Admin::Drain | Admin::Maint => {
                self.client
                    .deregister_targets()
                    .target_group_arn(&self.target_group)
                    .targets(target)
                    .send()
                    .await
                    .map_err(|e| sdk("DeregisterTargets", e))?;
            }
        }
        if admin == Admin::Maint {
            // Out of the pool means done draining: wait for `unused`, as long as
            // the deregistration delay and a minute more.
            let limit = self.deregistration_delay().await? + Duration::from_secs(60);
            let start = Instant::now();
            loop {
                let s = self.server(server).await?;
                if s.admin == Admin::Maint {
                    return Ok(());
                }
                if start.elapsed() > limit {
                    return Err(format!(
                        "{server} still {} {}s after DeregisterTargets (deregistration delay plus a minute)",
                        s.detail,
                        limit.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Ok(())
    }

    /// The one target group that gets traffic; during a split, each with its
    /// share (`ARN (75%), ARN (25%)`).
    async fn active(&self, _map: Option<&str>, _key: Option<&str>) -> Result<String, String> {
        let live: BTreeMap<String, u32> = self
            .forwards("`active`")
            .await?
            .into_iter()
            .filter(|g| g.1 > 0)
            .collect();
        let total: u32 = live.values().sum();
        Ok(match live.len() {
            0 | 1 => live.into_keys().next().unwrap_or_default(),
            _ => live
                .iter()
                .map(|(arn, w)| format!("{arn} ({}%)", f64::from(*w) * 100.0 / f64::from(total)))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    async fn split(&self, from: &str, to: &str) -> Result<Split, String> {
        let weights = self.forwards("`split`").await?;
        if let Some(other) = weights.iter().find(|(arn, w)| **w > 0 && *arn != from && *arn != to) {
            return Err(format!(
                "the listener forwards to {}, neither `from` nor `to`: refusing to split",
                other.0
            ));
        }
        let total: u32 = weights.values().sum();
        let of_to = weights.get(to).copied().unwrap_or(0);
        Ok(Split {
            to_share: if total > 0 {
                f64::from(of_to) * 100.0 / f64::from(total)
            } else {
                0.0
            },
            weights,
        })
    }

    async fn set_split(&self, from: &str, to: &str, share: f64) -> Result<(), String> {
        // Weights 0-999 in AWS: whole percents.
        #[allow(clippy::cast_possible_truncation)]
        let to_weight = share.round().clamp(0.0, 100.0) as i32;
        let group = |arn: &str, weight: i32| TargetGroupTuple::builder().target_group_arn(arn).weight(weight).build();
        let forward = ForwardActionConfig::builder()
            .target_groups(group(from, 100 - to_weight))
            .target_groups(group(to, to_weight))
            .build();
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(forward)
            .build();
        self.forward(self.listener("`split`")?, action).await
    }

    async fn switch(&self, map: Option<&str>, key: Option<&str>, to: &str) -> Result<(String, String), String> {
        let listener = self.listener("`switch`")?;
        let before = self.active(map, key).await?;
        if before != to {
            let action = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(to)
                .build();
            self.forward(listener, action).await?;
        }
        Ok((before, to.to_owned()))
    }

    fn drained(&self, s: &Server) -> bool {
        s.admin != Admin::Drain
    }

    fn caveat(&self) -> Option<String> {
        None
    }
}
