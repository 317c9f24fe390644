//! `scripts/setup` on a fresh machine: what it installs, as root and with
//! sudo. A stub `apt-get` (first on PATH) records what it is asked; the tools
//! the script looks for on PATH are missing, so it must ask for their packages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs scripts/setup with a PATH of only what it needs to run, a stub
/// `apt-get` and `sudo`, and `id -u` answering `uid`; what was asked, in order.
fn setup_as(uid: u32) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["bash", "dirname", "sort", "sed", "env", "cat", "readlink"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let log = dir.path().join("asked");
    script(&bin, "cargo", "exit 0");
    script(&bin, "id", &format!("echo {uid}"));
    script(
        &bin,
        "apt-get",
        &format!(
            "echo \"apt-get $* (DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}})\" >> {}",
            log.display()
        ),
    );
    script(
        &bin,
        "sudo",
        &format!("echo \"sudo $1\" >> {}; exec \"$@\"", log.display()),
    );
    let out = std::process::Command::new(support::workspace().join("scripts/setup"))
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn as_root_setup_installs_the_missing_packages_without_sudo() {
    let (code, asked, stderr) = setup_as(0);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = asked.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("apt-get update -qq (DEBIAN_FRONTEND=)"),
        "{asked}"
    );
    let install = lines.get(1).copied().unwrap_or_default();
    assert!(install.starts_with("apt-get install -y -qq "), "{asked}");
    assert!(install.ends_with("(DEBIAN_FRONTEND=noninteractive)"), "{asked}");
    for package in ["curl", "python3", "util-linux", "openssh-client", "dash"] {
        assert!(
            install.split_whitespace().any(|w| w == package),
            "{package} in {install}"
        );
    }
    assert!(!asked.contains("sudo"), "{asked}");
}

#[test]
fn as_a_user_setup_installs_through_sudo() {
    let (code, asked, stderr) = setup_as(1000);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = asked.lines().collect();
    assert_eq!(lines.first().copied(), Some("sudo apt-get"), "{asked}");
    assert!(lines.contains(&"sudo env"), "{asked}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("apt-get install -y -qq ") && l.ends_with("(DEBIAN_FRONTEND=noninteractive)")),
        "{asked}"
    );
}
