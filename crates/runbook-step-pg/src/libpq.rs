//! The conventions every PostgreSQL operator relies on, as libpq applies them:
//! the connection service file, the `PG*` environment variables, and the
//! password file. `pg_dump` and `psql` in the same run read the same ones, so
//! a DSN that works for them works for the `pg` kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_postgres::config::Host;

/// Splits a `key=value ...` connection string (values may be single-quoted,
/// with `\'` and `\\` escapes).
fn parse_kv(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` in the connection string has no `=value`"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err("a quoted value in the connection string is not closed".to_owned()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                } else {
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key, value));
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The service files libpq reads, in its order: the user's, then the system's.
fn service_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    match std::env::var_os("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => files.extend(home().map(|h| h.join(".pg_service.conf"))),
    }
    match std::env::var_os("PGSYSCONFDIR") {
        Some(d) => files.push(PathBuf::from(d).join("pg_service.conf")),
        None => files.push(PathBuf::from("/etc/postgresql-common/pg_service.conf")),
    }
    files
}

/// The keys of service `name` in a service file (`[name]` then `key=value`
/// lines), if the file has it.
fn service_in(path: &Path, name: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut inside = false;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section == name;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside {
            if let (Some((k, v)), Some(keys)) = (line.split_once('='), found.as_mut()) {
                keys.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    found
}

/// A `key=value` DSN with its `service` (or `$PGSERVICE`) expanded: the
/// service's keys first, the DSN's own winning over them.
pub(crate) fn with_service(dsn: &str) -> Result<String, String> {
    let own = parse_kv(dsn)?;
    let service = own
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PGSERVICE").ok().filter(|s| !s.is_empty()));
    let Some(name) = service else {
        return Ok(dsn.to_owned());
    };
    let keys = service_files()
        .iter()
        .find_map(|f| service_in(f, &name))
        .ok_or_else(|| {
            format!(
                "no connection service `{name}` in {}",
                service_files()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })?;
    let mut merged: BTreeMap<String, String> = keys.into_iter().collect();
    for (k, v) in own {
        if k != "service" {
            merged.insert(k, v);
        }
    }
    Ok(merged
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Fills what the DSN leaves out from `PGHOST`, `PGPORT`, `PGUSER`,
/// `PGDATABASE`, `PGPASSWORD` and `PGSSLMODE`, then libpq's defaults (the
/// local socket directory, the operating system's user name).
pub(crate) fn apply_env(config: &mut tokio_postgres::Config, text: &str) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',') {
                    config.host(h.trim());
                }
            }
            None => {
                let socket = Path::new("/var/run/postgresql");
                config.host(if socket.is_dir() {
                    "/var/run/postgresql"
                } else {
                    "localhost"
                });
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let os_user = || {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        };
        if let Some(user) = env("PGUSER").or_else(os_user) {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        }
    }
    if !text.contains("sslmode") {
        use tokio_postgres::config::SslMode;
        match env("PGSSLMODE").as_deref() {
            Some("disable") => {
                config.ssl_mode(SslMode::Disable);
            }
            Some("require" | "verify-ca" | "verify-full") => {
                config.ssl_mode(SslMode::Require);
            }
            _ => {}
        }
    }
}

/// One field of a password file line: `*` matches anything; `\:` and `\\`
/// are a literal colon and backslash.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// The password for this connection from the password file (`$PGPASSFILE`,
/// else `~/.pgpass`), as libpq finds it: the first line whose host, port,
/// database and user match. Like libpq, a file others can read is ignored.
pub(crate) fn passfile_password(config: &tokio_postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pgpass")))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a connection over the default socket as `localhost`.
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let unix = matches!(config.get_hosts().first(), Some(Host::Unix(_)));
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let db = config.get_dbname().map_or_else(|| user.clone(), str::to_owned);
    let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(fields)
        .filter(|f| f.len() == 5)
        .find(|f| {
            (matches(&f[0], &host) || (unix && f[0] == "localhost"))
                && matches(&f[1], &port)
                && matches(&f[2], &db)
                && matches(&f[3], &user)
        })
        .map(|f| f[4].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_with_quotes_and_escapes() {
        assert_eq!(
            parse_kv("host=a  port = 5 password='it\\'s x' dbname=d\\ b"),
            Ok(vec![
                ("host".into(), "a".into()),
                ("port".into(), "5".into()),
                ("password".into(), "it's x".into()),
                ("dbname".into(), "d b".into()),
            ])
        );
        assert!(parse_kv("host").is_err());
    }

    #[test]
    fn password_file_fields() {
        assert_eq!(fields(r"h:5432:*:u:p\:w\\d"), ["h", "5432", "*", "u", r"p:w\d"]);
        assert_eq!(fields("h:1:db:u:a:b"), ["h", "1", "db", "u", "a:b"]);
    }
}
