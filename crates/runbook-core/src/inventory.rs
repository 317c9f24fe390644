//! The inventory: the hosts a playbook can reach, and groups of them.
//!
//! ```yaml
//! defaults: { user: deploy, port: 22 }
//! hosts:
//!   web1: { address: 10.0.1.11, vars: { role: web } }
//!   web2: { address: 10.0.1.12 }
//!   db1:  { address: 10.0.2.10, user: postgres, jump: bastion }
//!   bastion: { address: bastion.example.com }
//! groups:
//!   web: [web1, web2]
//! group_vars:
//!   web: { tier: front }
//! ```
//!
//! Templates read it as `inventory.groups.web` (a list of host names) and
//! `inventory.hosts.web1.address`; a host's settings are merged with `defaults`.
//! Mistakes get the same located diagnostics as playbooks.

use crate::diag::{Diagnostic, Source, suggestion};
use crate::parse::Node;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Hosts and groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Settings every host gets unless it sets its own.
    #[serde(default)]
    pub defaults: HostSettings,
    /// The hosts, by name.
    #[serde(default)]
    pub hosts: IndexMap<String, Host>,
    /// Named lists of hosts.
    #[serde(default)]
    pub groups: IndexMap<String, Vec<String>>,
    /// Variables every host of a group gets (groups in the order written; a
    /// host's own `vars` win).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub group_vars: IndexMap<String, IndexMap<String, Json>>,
}

/// How to reach hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The SSH user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The SSH port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A bastion to jump through: a host of the inventory or `user@host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
    /// Trust a host key seen for the first time (never a changed one). Default: strict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_new_host_keys: Option<bool>,
    /// A known_hosts file to check host keys against, besides the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

/// One host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Its address (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// How to reach it (overrides `defaults`).
    #[serde(flatten)]
    pub settings: HostSettings,
    /// Free variables for templates: `inventory.hosts.<name>.vars.role`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, Json>,
}

impl Inventory {
    /// A host with the defaults applied, and its variables: its groups'
    /// `group_vars`, then its own.
    pub fn resolved(&self, name: &str) -> Option<(String, HostSettings, IndexMap<String, Json>)> {
        let h = self.hosts.get(name)?;
        let d = &self.defaults;
        let s = &h.settings;
        let settings = HostSettings {
            user: s.user.clone().or_else(|| d.user.clone()),
            port: s.port.or(d.port),
            key: s.key.clone().or_else(|| d.key.clone()),
            jump: s.jump.clone().or_else(|| d.jump.clone()),
            accept_new_host_keys: s.accept_new_host_keys.or(d.accept_new_host_keys),
            known_hosts: s.known_hosts.clone().or_else(|| d.known_hosts.clone()),
        };
        let mut vars = IndexMap::new();
        for (group, values) in &self.group_vars {
            if self.groups.get(group).is_some_and(|m| m.iter().any(|x| x == name)) {
                vars.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        vars.extend(h.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some((h.address.clone().unwrap_or_else(|| name.to_owned()), settings, vars))
    }

    /// The groups each host is in.
    pub fn groups_of(&self, name: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|(_, members)| members.iter().any(|m| m == name))
            .map(|(g, _)| g.as_str())
            .collect()
    }

    /// What templates see as `inventory`.
    pub fn to_template(&self) -> Json {
        let hosts: serde_json::Map<String, Json> = self
            .hosts
            .keys()
            .filter_map(|name| {
                let (address, s, vars) = self.resolved(name)?;
                Some((
                    name.clone(),
                    serde_json::json!({
                        "name": name,
                        "address": address,
                        "user": s.user,
                        "port": s.port,
                        "key": s.key,
                        "jump": s.jump,
                        "accept_new_host_keys": s.accept_new_host_keys.unwrap_or(false),
                        "known_hosts": s.known_hosts,
                        "vars": vars,
                        "groups": self.groups_of(name),
                    }),
                ))
            })
            .collect();
        serde_json::json!({ "hosts": hosts, "groups": self.groups })
    }
}

/// Why an inventory file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// The file cannot be read.
    Io(String),
    /// An Ansible inventory that runbook cannot take.
    Ansible(String),
    /// A runbook inventory with errors, located in its text.
    Invalid {
        /// The file's text.
        source: Source,
        /// Its errors.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Reads an inventory file: an Ansible inventory (INI or YAML) as it is,
/// else runbook's own format.
pub fn read_file(path: &std::path::Path) -> Result<Inventory, ReadError> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| ReadError::Io(format!("cannot read inventory `{shown}`: {e}")))?;
    if let Some(read) = crate::ansible::read(path, &text) {
        return read.map_err(|e| ReadError::Ansible(format!("Ansible inventory `{shown}`: {e}")));
    }
    let source = Source::new(shown.to_string(), text);
    load(&source).map_err(|diagnostics| ReadError::Invalid { source, diagnostics })
}

/// Reads and checks an inventory.
pub fn load(source: &Source) -> Result<Inventory, Vec<Diagnostic>> {
    let root = crate::parse::parse(&source.text)?;
    if root.value == crate::parse::Value::Null {
        return Ok(Inventory::default());
    }
    let schema = crate::kind::schema_for::<Inventory>();
    let mut diags = crate::validate::structure(&root, &schema);
    if diags.is_empty() {
        diags.extend(references(&root));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    serde_json::from_value(root.to_json())
        .map_err(|e| vec![Diagnostic::error("invalid", format!("invalid inventory: {e}"), None)])
}

/// Groups and jumps must name hosts of the inventory; `group_vars`, groups.
fn references(root: &Node) -> Vec<Diagnostic> {
    let names: Vec<&str> = root
        .get("hosts")
        .and_then(Node::entries)
        .map(|m| m.iter().map(|(k, _)| k.name.as_str()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (group, members) in root.get("groups").and_then(Node::entries).unwrap_or_default() {
        for m in members.items().unwrap_or_default() {
            let Some(name) = m.as_str() else { continue };
            if !names.contains(&name) {
                out.push(
                    Diagnostic::error(
                        "unknown-host",
                        format!("group `{}` names an unknown host `{name}`", group.name),
                        Some(m.span),
                    )
                    .label("not a host of this inventory")
                    .maybe_hint(
                        suggestion(name, names.iter().copied())
                            .or_else(|| Some("declare it under `hosts:`".to_owned())),
                    ),
                );
            }
        }
    }
    let groups: Vec<&str> = root
        .get("groups")
        .and_then(Node::entries)
        .map(|m| m.iter().map(|(k, _)| k.name.as_str()).collect())
        .unwrap_or_default();
    for (group, _) in root.get("group_vars").and_then(Node::entries).unwrap_or_default() {
        if !groups.contains(&group.name.as_str()) {
            out.push(
                Diagnostic::error(
                    "unknown-group",
                    format!("`group_vars` names an unknown group `{}`", group.name),
                    Some(group.span),
                )
                .label("not a group of this inventory")
                .maybe_hint(
                    suggestion(&group.name, groups.iter().copied())
                        .or_else(|| Some("declare it under `groups:`".to_owned())),
                ),
            );
        }
    }
    let jumps = root
        .get("hosts")
        .and_then(Node::entries)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, h)| h.get("jump"))
        .chain(root.pointer("/defaults/jump"));
    for j in jumps {
        let Some(name) = j.as_str() else { continue };
        // `user@host:port` or an address with dots/colons is taken as written.
        let plain = !name.contains(['@', ':', '.']);
        if plain && !names.contains(&name) {
            out.push(
                Diagnostic::error(
                    "unknown-host",
                    format!("`jump` names an unknown host `{name}`"),
                    Some(j.span),
                )
                .label("not a host of this inventory")
                .maybe_hint(
                    suggestion(name, names.iter().copied())
                        .or_else(|| Some("name a host of the inventory, or write `user@host:port`".to_owned())),
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(t: &str) -> Source {
        Source::new("inventory.yaml", t.to_owned())
    }

    #[test]
    fn defaults_merge_and_groups() {
        let inv = load(&src(
            "defaults: { user: deploy, port: 2222 }\nhosts:\n  web1: { address: 127.0.1.1, vars: { role: web } }\n  web2: { user: root }\ngroups:\n  web: [web1, web2]\n",
        ))
        .expect("loads");
        let (addr, s, vars) = inv.resolved("web1").expect("web1");
        assert_eq!(
            (addr.as_str(), s.user.as_deref(), s.port),
            ("127.0.1.1", Some("deploy"), Some(2222))
        );
        assert_eq!(vars["role"], "web");
        let (addr, s, _) = inv.resolved("web2").expect("web2");
        assert_eq!((addr.as_str(), s.user.as_deref()), ("web2", Some("root")));
        // Group variables, with a host's own winning.
        let inv = load(&src(
            "hosts:\n  web1: { vars: { tier: edge } }\n  web2: {}\ngroups:\n  web: [web1, web2]\ngroup_vars:\n  web: { tier: front, env: prod }\n",
        ))
        .expect("loads");
        let t = inv.to_template();
        assert_eq!(
            t["hosts"]["web2"]["vars"],
            serde_json::json!({"tier": "front", "env": "prod"})
        );
        assert_eq!(t["hosts"]["web1"]["vars"]["tier"], "edge");
        assert_eq!(t["hosts"]["web1"]["vars"]["env"], "prod");
        let t = inv.to_template();
        assert_eq!(t["groups"]["web"], serde_json::json!(["web1", "web2"]));
        assert_eq!(t["hosts"]["web1"]["groups"], serde_json::json!(["web"]));
    }

    #[test]
    fn mistakes_are_located() {
        let errs = load(&src("hosts:\n  web1: { adress: x }\n")).expect_err("typo");
        assert_eq!(errs[0].code, "unknown-key");
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `address`?"));
        let errs = load(&src("hosts:\n  web1: {}\ngroups:\n  web: [web1, wbe2]\n")).expect_err("unknown host");
        assert_eq!(errs[0].code, "unknown-host");
        assert_eq!(errs[0].span.map(|s| (s.line, s.col)), Some((4, 15)));
        let errs = load(&src("hosts:\n  web1: { port: 70000 }\n")).expect_err("port");
        assert!(errs[0].message.contains("port"), "{errs:?}");
    }
}
