//! Ansible inventories, INI and YAML, read into runbook's own: an operator's
//! existing inventory works as it is.
//!
//! What is read: groups and their hosts, `children` (a group holds its
//! children's hosts), host and group variables (a host's own win over its
//! groups', a child group's over its parent's), host ranges (`web[01:20]`,
//! `db-[a:c]`), and the connection variables runbook uses: `ansible_host`
//! (the address), `ansible_port`, `ansible_user`,
//! `ansible_ssh_private_key_file`. Every other variable is a host variable for
//! templates (`inventory.hosts.web1.vars.role`). Patterns for `--limit` are in
//! [`limit`].

use crate::inventory::{Host, HostSettings, Inventory};
use indexmap::IndexMap;
use serde_json::Value as Json;

/// Reads an inventory file as Ansible's if it is one (INI, or YAML without
/// runbook's own keys); `None` when it is runbook's own format.
pub fn read(path: &std::path::Path, text: &str) -> Option<Result<Inventory, String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "ini" | "cfg") || is_ini(text) {
        return Some(from_ini(text));
    }
    if !is_ansible_yaml(text) {
        return None;
    }
    Some(
        crate::parse::parse(text)
            .map_err(|d| d.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; "))
            .and_then(|node| from_yaml(&node.to_json())),
    )
}

/// True if YAML text is an Ansible inventory rather than runbook's own.
fn is_ansible_yaml(text: &str) -> bool {
    // YAML: Ansible's starts with `all:` (or groups with hosts/children), ours
    // with `defaults`, `hosts` or `groups`.
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with([' ', '\t', '#', '-']) && l.contains(':'))
        .filter_map(|l| l.split(':').next())
        .collect();
    !top.is_empty()
        && !top
            .iter()
            .any(|k| matches!(*k, "defaults" | "hosts" | "groups" | "group_vars"))
}

/// True if an inventory is Ansible's INI (`[group]` sections, no YAML keys at
/// the top level).
fn is_ini(text: &str) -> bool {
    let section = |l: &str| l.starts_with('[') && l.ends_with(']');
    let yaml_key = |l: &&str| !l.starts_with([' ', '\t', '#', ';', '[']) && l.trim_end().ends_with(':');
    text.lines().any(|l| section(l.trim())) && !text.lines().any(|l| yaml_key(&l))
}

/// Expands a host pattern with a range: `web[01:03]` is web01, web02, web03;
/// `db-[a:c]` is db-a, db-b, db-c.
fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (pattern.find('['), pattern.find(']')) else {
        return Ok(vec![pattern.to_owned()]);
    };
    let (head, range, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let (a, b) = range
        .split_once(':')
        .ok_or_else(|| format!("`{pattern}`: a host range is `[START:END]`"))?;
    let mut out = Vec::new();
    let rest = expand(tail)?;
    let mut push = |middle: String| {
        for r in &rest {
            out.push(format!("{head}{middle}{r}"));
        }
    };
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) if x <= y && y - x < 100_000 => {
            let width = if a.starts_with('0') { a.len() } else { 0 };
            for n in x..=y {
                push(format!("{n:0width$}"));
            }
        }
        _ => match (a.chars().next(), b.chars().next(), a.len(), b.len()) {
            (Some(x), Some(y), 1, 1) if x.is_ascii_alphabetic() && x <= y => {
                for c in x..=y {
                    push(c.to_string());
                }
            }
            _ => return Err(format!("`{pattern}`: cannot read the range `[{range}]`")),
        },
    }
    Ok(out)
}

/// A value of an INI variable, typed as Ansible reads it (numbers, booleans,
/// quoted strings).
fn ini_value(v: &str) -> Json {
    let v = v.trim();
    if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Json::String(s.to_owned());
    }
    if let Some(s) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Json::String(s.to_owned());
    }
    crate::template::scalar_from_text(v)
}

/// What an inventory says before groups are flattened.
#[derive(Default)]
struct Raw {
    hosts: IndexMap<String, IndexMap<String, Json>>,
    groups: IndexMap<String, Vec<String>>,
    children: IndexMap<String, Vec<String>>,
    group_vars: IndexMap<String, IndexMap<String, Json>>,
}

/// Reads an Ansible INI inventory.
pub fn from_ini(text: &str) -> Result<Inventory, String> {
    let mut raw = Raw::default();
    let mut section = ("ungrouped".to_owned(), "hosts");
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |m: String| format!("line {}: {m}", n + 1);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match name.split_once(':') {
                Some((g, "children")) => (g.to_owned(), "children"),
                Some((g, "vars")) => (g.to_owned(), "vars"),
                Some((_, other)) => return Err(at(format!("unknown section kind `:{other}`"))),
                None => (name.to_owned(), "hosts"),
            };
            raw.groups.entry(section.0.clone()).or_default();
            continue;
        }
        match section.1 {
            "children" => raw.children.entry(section.0.clone()).or_default().push(line.to_owned()),
            "vars" => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| at(format!("`{line}` is not `name=value`")))?;
                raw.group_vars
                    .entry(section.0.clone())
                    .or_default()
                    .insert(k.trim().to_owned(), ini_value(v));
            }
            _ => {
                let mut words = line.split_whitespace();
                let pattern = words.next().unwrap_or_default();
                let mut vars = IndexMap::new();
                for w in words {
                    let (k, v) = w
                        .split_once('=')
                        .ok_or_else(|| at(format!("`{w}` is not `name=value`")))?;
                    vars.insert(k.to_owned(), ini_value(v));
                }
                for name in expand(pattern).map_err(at)? {
                    raw.hosts.entry(name.clone()).or_default().extend(vars.clone());
                    raw.groups.entry(section.0.clone()).or_default().push(name);
                }
            }
        }
    }
    build(raw)
}

/// Reads an Ansible YAML inventory (`all:` with `hosts`, `vars`, `children`).
pub fn from_yaml(root: &Json) -> Result<Inventory, String> {
    fn walk(name: &str, g: &Json, raw: &mut Raw) -> Result<(), String> {
        raw.groups.entry(name.to_owned()).or_default();
        if let Some(hosts) = g.get("hosts").and_then(Json::as_object) {
            for (pattern, vars) in hosts {
                for h in expand(pattern)? {
                    let entry = raw.hosts.entry(h.clone()).or_default();
                    if let Some(v) = vars.as_object() {
                        entry.extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    raw.groups.entry(name.to_owned()).or_default().push(h);
                }
            }
        }
        if let Some(vars) = g.get("vars").and_then(Json::as_object) {
            raw.group_vars
                .entry(name.to_owned())
                .or_default()
                .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(children) = g.get("children").and_then(Json::as_object) {
            for (child, body) in children {
                raw.children.entry(name.to_owned()).or_default().push(child.clone());
                walk(child, body, raw)?;
            }
        }
        Ok(())
    }
    let mut raw = Raw::default();
    let top = root
        .as_object()
        .ok_or("an Ansible YAML inventory is a mapping of groups (`all:`)")?;
    for (name, g) in top {
        walk(name, g, &mut raw)?;
    }
    build(raw)
}

/// Flattens children into groups, applies group variables (parents first),
/// and maps Ansible's connection variables onto runbook's host settings.
fn build(mut raw: Raw) -> Result<Inventory, String> {
    fn members(g: &str, raw: &Raw, seen: &mut Vec<String>) -> Result<Vec<String>, String> {
        if seen.iter().any(|s| s == g) {
            return Err(format!("group `{g}` is its own child (through {})", seen.join(" -> ")));
        }
        seen.push(g.to_owned());
        let mut out = raw.groups.get(g).cloned().unwrap_or_default();
        for c in raw.children.get(g).into_iter().flatten() {
            for h in members(c, raw, seen)? {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        seen.pop();
        Ok(out)
    }
    let names: Vec<String> = raw.groups.keys().cloned().collect();
    let mut groups: IndexMap<String, Vec<String>> = IndexMap::new();
    for g in &names {
        let m = members(g, &raw, &mut Vec::new())?;
        groups.insert(g.clone(), m);
    }
    // Every host is in `all`.
    let all: Vec<String> = raw.hosts.keys().cloned().collect();
    groups.insert("all".to_owned(), all);
    // Group variables: `all` first, then parents before children, host vars last.
    let depth = |g: &str| -> usize {
        let mut d = 0;
        let mut current = g.to_owned();
        while let Some((parent, _)) = raw.children.iter().find(|(_, cs)| cs.contains(&current)) {
            d += 1;
            current = parent.clone();
            if d > 64 {
                break;
            }
        }
        d
    };
    let mut ordered: Vec<&String> = raw.group_vars.keys().collect();
    ordered.sort_by_key(|g| if g.as_str() == "all" { 0 } else { depth(g) + 1 });
    let mut hosts = IndexMap::new();
    for (name, own) in std::mem::take(&mut raw.hosts) {
        let mut vars: IndexMap<String, Json> = IndexMap::new();
        for g in &ordered {
            if groups.get(*g).is_some_and(|m| m.contains(&name)) {
                vars.extend(raw.group_vars[*g].clone());
            }
        }
        vars.extend(own);
        let text = |k: &str| vars.get(k).map(crate::template::scalar_text);
        let port = match vars.get("ansible_port") {
            None => None,
            Some(p) => Some(
                crate::template::scalar_text(p)
                    .parse::<u16>()
                    .map_err(|_| format!("host `{name}`: `ansible_port` is not a port"))?,
            ),
        };
        let host = Host {
            address: text("ansible_host"),
            settings: HostSettings {
                user: text("ansible_user"),
                port,
                key: text("ansible_ssh_private_key_file"),
                ..HostSettings::default()
            },
            vars: vars
                .iter()
                .filter(|(k, _)| !k.starts_with("ansible_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        hosts.insert(name, host);
    }
    // Group variables are already merged into each host's.
    Ok(Inventory {
        defaults: HostSettings::default(),
        hosts,
        groups,
        group_vars: IndexMap::new(),
    })
}

/// Restricts an inventory to the hosts an Ansible-style pattern selects:
/// hosts or groups separated by `:` or `,`; `!x` excludes, `&x` intersects
/// (`web:!web2`, `web:&prod`). Groups keep only the selected hosts.
pub fn limit(inv: &Inventory, pattern: &str) -> Result<Inventory, String> {
    let hosts_of = |term: &str| -> Result<Vec<String>, String> {
        if let Some(m) = inv.groups.get(term) {
            return Ok(m.clone());
        }
        if inv.hosts.contains_key(term) {
            return Ok(vec![term.to_owned()]);
        }
        if term == "all" {
            return Ok(inv.hosts.keys().cloned().collect());
        }
        let names = inv.hosts.keys().chain(inv.groups.keys()).map(String::as_str);
        let hint = crate::diag::suggestion(term, names).map_or(String::new(), |s| format!(" (hint: {s})"));
        Err(format!("`--limit`: no host or group `{term}` in the inventory{hint}"))
    };
    let mut selected: Vec<String> = Vec::new();
    let (mut minus, mut and) = (Vec::new(), Vec::new());
    for term in pattern.split([':', ',']).map(str::trim).filter(|t| !t.is_empty()) {
        if let Some(t) = term.strip_prefix('!') {
            minus.extend(hosts_of(t)?);
        } else if let Some(t) = term.strip_prefix('&') {
            and.push(hosts_of(t)?);
        } else {
            for h in hosts_of(term)? {
                if !selected.contains(&h) {
                    selected.push(h);
                }
            }
        }
    }
    selected.retain(|h| !minus.contains(h) && and.iter().all(|a| a.contains(h)));
    if selected.is_empty() {
        return Err(format!("`--limit {pattern}` selects no host"));
    }
    let mut out = inv.clone();
    out.hosts.retain(|name, _| selected.contains(name));
    for members in out.groups.values_mut() {
        members.retain(|h| selected.contains(h));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "\
# the fleet
bastion ansible_host=203.0.113.5

[web]
web[01:03] ansible_user=deploy

[db]
db1 ansible_host=10.0.2.10 ansible_port=2222 role=primary

[prod:children]
web
db

[prod:vars]
env=prod
[web:vars]
tier=front
";

    #[test]
    fn ini_groups_children_ranges_and_vars() {
        let inv = from_ini(INI).expect("reads");
        assert_eq!(inv.groups["web"], ["web01", "web02", "web03"]);
        assert_eq!(inv.groups["prod"], ["web01", "web02", "web03", "db1"]);
        assert_eq!(inv.groups["ungrouped"], ["bastion"]);
        let db = &inv.hosts["db1"];
        assert_eq!(db.address.as_deref(), Some("10.0.2.10"));
        assert_eq!(db.settings.port, Some(2222));
        assert_eq!(db.vars["role"], "primary");
        assert_eq!(db.vars["env"], "prod");
        let web = &inv.hosts["web02"];
        assert_eq!(web.settings.user.as_deref(), Some("deploy"));
        assert_eq!(
            (web.vars["env"].as_str(), web.vars["tier"].as_str()),
            (Some("prod"), Some("front"))
        );
    }

    #[test]
    fn yaml_inventories() {
        let yaml = serde_json::json!({
            "all": {
                "vars": { "env": "prod" },
                "children": {
                    "web": { "hosts": { "web[1:2]": { "ansible_host": "10.0.0.1" } }, "vars": { "env": "stage" } },
                    "db": { "hosts": { "db1": null } }
                }
            }
        });
        let inv = from_yaml(&yaml).expect("reads");
        assert_eq!(inv.groups["web"], ["web1", "web2"]);
        assert_eq!(inv.groups["all"], ["web1", "web2", "db1"]);
        assert_eq!(
            inv.hosts["web1"].vars["env"], "stage",
            "a child group's vars win over all's"
        );
        assert_eq!(inv.hosts["db1"].vars["env"], "prod");
    }

    #[test]
    fn limits() {
        let inv = from_ini(INI).expect("reads");
        let l = limit(&inv, "web:!web02").expect("limits");
        assert_eq!(l.groups["web"], ["web01", "web03"]);
        assert_eq!(l.groups["prod"], ["web01", "web03"]);
        assert_eq!(limit(&inv, "prod:&db").expect("limits").groups["prod"], ["db1"]);
        assert!(limit(&inv, "prodd").is_err_and(|e| e.contains("did you mean `prod`")));
        assert!(limit(&inv, "web:!web").is_err());
        assert!(expand("x[1:").is_ok_and(|v| v == ["x[1:"]));
        assert_eq!(expand("n[08:10]").expect("range"), ["n08", "n09", "n10"]);
    }
}
