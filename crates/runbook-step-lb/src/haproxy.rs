//! A client of HAProxy's runtime API (the `stats socket ... level admin`), over
//! a unix socket or TCP: one command per connection, as HAProxy answers it and
//! closes. Parses `show stat` (CSV) and `show servers state`.

use crate::{Admin, Driver, Health, Server, Split};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the runtime API listens: a unix socket path, or `host:port`
/// (`ipv4@` prefixes as in haproxy.cfg are accepted).
#[derive(Debug, Clone)]
pub(crate) struct HaProxy {
    pub(crate) socket: String,
    pub(crate) backend: String,
    /// haproxy.cfg, read to tell whether runtime changes survive a reload.
    pub(crate) config: Option<String>,
}

/// How long one runtime API command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl HaProxy {
    /// Sends one command and returns HAProxy's whole answer.
    pub(crate) async fn command(&self, line: &str) -> Result<String, String> {
        let work = async {
            if self.socket.starts_with('/') {
                let s = tokio::net::UnixStream::connect(&self.socket)
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                exchange(s, line).await
            } else {
                let addr = self.socket.trim_start_matches("ipv4@").trim_start_matches("tcp@");
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                exchange(s, line).await
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "HAProxy runtime API at {} did not answer `{line}` within {}s",
                self.socket,
                COMMAND_TIMEOUT.as_secs()
            )),
        }
    }

    fn unreachable(&self, e: &std::io::Error) -> String {
        format!(
            "cannot reach the HAProxy runtime API at {}: {e} (is HAProxy running with `stats socket {} level admin`?)",
            self.socket, self.socket
        )
    }

    /// A command that answers nothing on success and an error text otherwise.
    /// The value of `key` in `map` (as loaded by haproxy.cfg), if set.
    async fn map_value(&self, map: &str, key: &str) -> Result<Option<String>, String> {
        let shown = self.command(&format!("show map {map}")).await?;
        if shown.to_lowercase().contains("unknown map") {
            return Err(format!("HAProxy has no map `{map}` (it must be loaded by haproxy.cfg)"));
        }
        // Lines are `<id> <key> <value>`.
        Ok(shown.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let _id = f.next()?;
            (f.next()? == key).then(|| f.next().unwrap_or("").to_owned())
        }))
    }

    /// `show servers state <backend>`, or an error naming the backend.
    async fn states(&self, backend: &str) -> Result<Vec<(String, u32, u32, u32)>, String> {
        let state = self.command(&format!("show servers state {backend}")).await?;
        if state.contains("Can't find backend") || state.contains("No such backend") {
            return Err(format!("HAProxy has no backend `{backend}`"));
        }
        parse_servers_state(&state)
    }

    /// The servers of the ramp backend (`self.backend`) with their weights,
    /// each told apart by the backend of `from` or `to` that has a server of
    /// the same name: (from's, to's). An error when one is in neither or both.
    async fn sides(&self, from: &str, to: &str) -> Result<(Vec<(String, u32)>, Vec<(String, u32)>), String> {
        if self.backend.is_empty() {
            return Err("haproxy `split` needs `backend`: the backend holding the servers of both sides".to_owned());
        }
        let names = |states: Vec<(String, u32, u32, u32)>| states.into_iter().map(|s| s.0).collect::<Vec<_>>();
        let (of_from, of_to) = (names(self.states(from).await?), names(self.states(to).await?));
        let (mut f, mut t) = (Vec::new(), Vec::new());
        for (name, _, _, weight) in self.states(&self.backend).await? {
            match (of_from.contains(&name), of_to.contains(&name)) {
                (true, false) => f.push((name, weight)),
                (false, true) => t.push((name, weight)),
                (true, true) => {
                    return Err(format!(
                        "server `{name}` of backend `{}` is in both `{from}` and `{to}`: refusing to split (which side is it?)",
                        self.backend
                    ));
                }
                (false, false) => {
                    return Err(format!(
                        "server `{name}` of backend `{}` is in neither `{from}` nor `{to}`: refusing to split, \
                         traffic could go elsewhere (hint: the backend must hold the servers of both sides, named \
                         as in theirs)",
                        self.backend
                    ));
                }
            }
        }
        if f.is_empty() || t.is_empty() {
            return Err(format!(
                "backend `{}` has no server of `{}`: it must hold the servers of both `{from}` and `{to}`",
                self.backend,
                if f.is_empty() { from } else { to }
            ));
        }
        Ok((f, t))
    }

    async fn checked(&self, line: &str) -> Result<(), String> {
        let answer = self.command(line).await?;
        let answer = answer.trim();
        if answer.is_empty() {
            Ok(())
        } else {
            Err(format!("HAProxy refused `{line}`: {answer}"))
        }
    }
}

/// Writes one command and reads the answer until HAProxy closes the connection.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S, line: &str) -> Result<String, String> {
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `show servers state <backend>`: name -> (operational state, admin bits).
pub(crate) fn parse_servers_state(text: &str) -> Result<Vec<(String, u32, u32, u32)>, String> {
    let mut header: Option<Vec<&str>> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = Some(h.split(' ').collect());
            continue;
        }
        let Some(h) = &header else { continue };
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < h.len() {
            continue;
        }
        let get = |name: &str| h.iter().position(|c| *c == name).and_then(|i| fields.get(i).copied());
        let num = |name: &str| get(name).and_then(|v| v.parse::<u32>().ok());
        if let (Some(name), Some(op), Some(admin), Some(weight)) = (
            get("srv_name"),
            num("srv_op_state"),
            num("srv_admin_state"),
            num("srv_uweight"),
        ) {
            out.push((name.to_owned(), op, admin, weight));
        }
    }
    if header.is_none() {
        return Err(format!("unexpected answer to `show servers state`: {}", text.trim()));
    }
    Ok(out)
}

/// `show stat` CSV: server name -> (current sessions, queued, status text).
pub(crate) fn parse_stat(text: &str, backend: &str) -> Vec<(String, u64, u64, String)> {
    let mut lines = text.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(scur), Some(qcur), Some(status)) =
        (at("pxname"), at("svname"), at("scur"), at("qcur"), at("status"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let name = *f.get(sv)?;
            if *f.get(px)? != backend || name == "BACKEND" || name == "FRONTEND" {
                return None;
            }
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            Some((name.to_owned(), n(scur), n(qcur), f.get(status)?.to_string()))
        })
        .collect()
}

/// HAProxy's largest server weight.
const MAX_WEIGHT: f64 = 256.0;

/// The server weights (from's, to's) that give `to` `share` percent of the
/// traffic, spread evenly over each side's servers, as fine as HAProxy's
/// weights allow (the busiest side's servers near 256). A side with a share
/// above 0 never rounds to weight 0.
pub(crate) fn ramp_weights(n_from: usize, n_to: usize, share: f64) -> (u32, u32) {
    // Each server's part of the traffic.
    let per_server = |percent: f64, n: usize| percent / n.max(1) as f64;
    let (f, t) = (per_server(100.0 - share, n_from), per_server(share, n_to));
    let scale = MAX_WEIGHT / f.max(t);
    let weight = |per: f64| {
        let w = (per * scale).round().clamp(0.0, MAX_WEIGHT);
        if per > 0.0 { w.max(1.0) } else { w }
    };
    // Whole numbers from 0 to 256, so the casts cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (weight(f) as u32, weight(t) as u32)
}

/// HAProxy's admin-state bits (srv_admin_state in `show servers state`).
const FORCED_MAINT: u32 = 0x01;
const INHERITED_MAINT: u32 = 0x02;
const CONFIG_MAINT: u32 = 0x04;
const FORCED_DRAIN: u32 = 0x08;
const INHERITED_DRAIN: u32 = 0x10;
const RESOLUTION_MAINT: u32 = 0x20;

fn admin_of(bits: u32) -> Admin {
    if bits & (FORCED_MAINT | INHERITED_MAINT | CONFIG_MAINT | RESOLUTION_MAINT) != 0 {
        Admin::Maint
    } else if bits & (FORCED_DRAIN | INHERITED_DRAIN) != 0 {
        Admin::Drain
    } else {
        Admin::Ready
    }
}

/// Whether haproxy.cfg keeps runtime changes across a reload: a global
/// `server-state-file` and `load-server-state-from-file` in defaults or backend.
pub(crate) fn keeps_state(cfg: &str) -> bool {
    let active = |kw: &str| {
        cfg.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .any(|l| l.split_whitespace().next() == Some(kw) && !l.contains(" none"))
    };
    active("server-state-file") && active("load-server-state-from-file")
}

#[async_trait::async_trait]
impl Driver for HaProxy {
    fn pool(&self) -> String {
        format!("haproxy {}", self.backend)
    }

    async fn servers(&self) -> Result<Vec<Server>, String> {
        let states = self.states(&self.backend).await?;
        let stat = self.command(&format!("show stat {} 4 -1", self.backend)).await?;
        let stats = parse_stat(&stat, &self.backend);
        Ok(states
            .into_iter()
            .map(|(name, op, admin, weight)| {
                let (sessions, queued, status) = stats
                    .iter()
                    .find(|s| s.0 == name)
                    .map(|s| (s.1, s.2, s.3.clone()))
                    .unwrap_or_default();
                let health = if status.starts_with("no check") {
                    Health::Unchecked
                } else if op == 2 && !status.starts_with("DOWN") {
                    Health::Up
                } else {
                    Health::Down
                };
                Server {
                    name,
                    admin: admin_of(admin),
                    health,
                    sessions: Some(sessions + queued),
                    weight: Some(weight),
                    detail: status,
                }
            })
            .collect())
    }

    async fn set(&self, server: &str, admin: Admin) -> Result<(), String> {
        let state = match admin {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        };
        self.checked(&format!("set server {}/{server} state {state}", self.backend))
            .await
    }

    async fn active(&self, map: Option<&str>, key: Option<&str>) -> Result<String, String> {
        let map = map.ok_or("haproxy needs `map` (the map file that `use_backend` reads)")?;
        Ok(self.map_value(map, key.unwrap_or("active")).await?.unwrap_or_default())
    }

    async fn switch(&self, map: Option<&str>, key: Option<&str>, to: &str) -> Result<(String, String), String> {
        let map = map.ok_or("haproxy `switch` needs `map` (the map file that `use_backend` reads)")?;
        let key = key.unwrap_or("active");
        let before = self.map_value(map, key).await?;
        match &before {
            Some(v) if v == to => {}
            Some(_) => self.checked(&format!("set map {map} {key} {to}")).await?,
            None => self.checked(&format!("add map {map} {key} {to}")).await?,
        }
        Ok((before.unwrap_or_default(), to.to_owned()))
    }

    async fn split(&self, from: &str, to: &str) -> Result<Split, String> {
        let (f, t) = self.sides(from, to).await?;
        let sum = |side: &[(String, u32)]| side.iter().map(|s| f64::from(s.1)).sum::<f64>();
        let total = sum(&f) + sum(&t);
        Ok(Split {
            to_share: if total > 0.0 { sum(&t) * 100.0 / total } else { 0.0 },
            weights: f.into_iter().chain(t).collect::<BTreeMap<_, _>>(),
        })
    }

    async fn set_split(&self, from: &str, to: &str, share: f64) -> Result<(), String> {
        let (f, t) = self.sides(from, to).await?;
        let (wf, wt) = ramp_weights(f.len(), t.len(), share);
        let wanted = f.iter().map(|s| (s, wf)).chain(t.iter().map(|s| (s, wt)));
        for ((name, now), weight) in wanted {
            if *now != weight {
                self.checked(&format!("set weight {}/{name} {weight}", self.backend))
                    .await?;
            }
        }
        Ok(())
    }

    fn caveat(&self) -> Option<String> {
        match self.config.as_deref().map(std::fs::read_to_string) {
            Some(Ok(cfg)) if keeps_state(&cfg) => None,
            Some(Ok(_)) => Some(format!(
                "{} has no server-state-file: runtime changes (drain, maint, weights, maps) are lost when HAProxy reloads",
                self.config.as_deref().unwrap_or("haproxy.cfg")
            )),
            Some(Err(e)) => Some(format!(
                "cannot read {}: {e}; runtime changes are lost on a reload unless a server-state-file is configured",
                self.config.as_deref().unwrap_or("haproxy.cfg")
            )),
            None => Some(
                "runtime changes are lost when HAProxy reloads unless haproxy.cfg sets a server-state-file (pass `config:` to check)"
                    .to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_state_and_stat() {
        let state = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n3 app 1 web1 127.0.0.1 2 0 1 1\n3 app 2 web2 127.0.0.2 2 8 1 1\n3 app 3 web3 127.0.0.3 0 1 1 1\n";
        let s = parse_servers_state(state).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(admin_of(s[0].2), Admin::Ready);
        assert_eq!(admin_of(s[1].2), Admin::Drain);
        assert_eq!(admin_of(s[2].2), Admin::Maint);
        assert!(parse_servers_state("Can't find backend.\n").is_err());
        let stat = "# pxname,svname,qcur,qmax,scur,smax,status\napp,web1,0,0,3,5,UP\napp,web2,1,0,0,2,DRAIN\napp,BACKEND,0,0,3,5,UP\nother,web1,0,0,9,9,UP\n";
        let st = parse_stat(stat, "app");
        assert_eq!(
            st,
            vec![
                ("web1".into(), 3, 0, "UP".into()),
                ("web2".into(), 0, 1, "DRAIN".into())
            ]
        );
    }

    #[test]
    fn ramp_weights_give_the_share_asked() {
        let share = |n_from: usize, n_to: usize, asked: f64| {
            let (f, t) = ramp_weights(n_from, n_to, asked);
            let (f, t) = (f64::from(f) * n_from as f64, f64::from(t) * n_to as f64);
            t * 100.0 / (f + t)
        };
        for (n_from, n_to) in [(1, 1), (3, 3), (2, 3), (3, 1), (1, 5)] {
            for asked in [0.0, 1.0, 5.0, 25.0, 50.0, 90.0, 100.0] {
                let got = share(n_from, n_to, asked);
                assert!((got - asked).abs() < 1.0, "{n_from}+{n_to} at {asked}%: {got}%");
            }
        }
        assert_eq!(ramp_weights(3, 3, 25.0), (256, 85));
        assert_eq!(ramp_weights(2, 2, 0.0), (256, 0));
        assert_eq!(ramp_weights(2, 2, 100.0), (0, 256));
        // A small share never rounds to no traffic.
        assert_eq!(ramp_weights(1, 1, 0.1).1, 1);
    }

    #[test]
    fn tells_whether_state_survives_a_reload() {
        assert!(keeps_state(
            "global\n  server-state-file /x\ndefaults\n  load-server-state-from-file global\n"
        ));
        assert!(!keeps_state(
            "global\n  # server-state-file /x\ndefaults\n  load-server-state-from-file global\n"
        ));
        assert!(!keeps_state("global\n  server-state-file /x\n"));
    }
}
