//! The `lb` kind against a real HAProxy (the lab's): drain under load with
//! sessions falling to 0 before `wait-drained` returns, out of and back into
//! rotation, a blue-green switch, a split of users by server weights,
//! idempotent re-runs, and the reload caveat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Load, Run};

fn socket(lab: &Lab) -> String {
    lab.info["haproxy"]["socket"].as_str().unwrap().to_owned()
}

fn drain_playbook(lab: &Lab) -> String {
    format!(
        r#"apiVersion: runbook/v1
name: drain
version: 1
steps:
  - id: drain
    uses: lb
    with: {{ action: drain, backend: app, server: web1, socket: "{s}" }}
  - id: drained
    uses: lb
    needs: [drain]
    with: {{ action: wait-drained, backend: app, server: web1, socket: "{s}", interval: 50ms, timeout: 30s }}
"#,
        s = socket(lab)
    )
}

#[test]
fn drain_waits_until_the_server_has_no_sessions() {
    let lab = Lab::start(2);
    let port = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    // Slow requests keep sessions open on both servers.
    let load = Load::start(port, "/slow/400", 6);
    let mut seen = 0;
    for _ in 0..100 {
        seen = lab.server_state("app", "web1").2;
        if seen > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(seen > 0, "the load reaches web1 before the drain");
    let run = Run::new().playbook("drain", &drain_playbook(&lab));
    let out = run.exec(["run", "drain"]).exit(0);
    // The moment wait-drained returned, web1 had no sessions, and it takes none.
    let (admin, _, sessions) = lab.server_state("app", "web1");
    assert_eq!(sessions, 0, "{}", out.stdout);
    assert_eq!(admin & 0x08, 0x08, "web1 is in drain");
    assert!(out.stdout.contains("app/web1: ready -> drain"), "{}", out.stdout);
    assert!(
        out.stdout.contains("waiting: "),
        "it had sessions to wait for:\n{}",
        out.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        lab.server_state("app", "web1").2,
        0,
        "no new sessions on a drained server"
    );
    let count = load.stop();
    assert_eq!(
        count.http_errors + count.connection_errors,
        0,
        "a drain loses no request: {count:?}"
    );
    assert!(count.ok > 10, "{count:?}");
    // Draining a drained server again succeeds and changes nothing.
    run.exec(["run", "drain"])
        .exit(0)
        .stdout_has("app/web1: drain -> drain");
}

#[test]
fn out_of_rotation_and_back_until_healthy() {
    let lab = Lab::start(2);
    let yaml = format!(
        r#"apiVersion: runbook/v1
name: cycle
version: 1
steps:
  - {{ id: out, uses: lb, with: {{ action: deregister, backend: app, server: web2, socket: "{s}" }} }}
  - id: only-web1
    uses: http-check
    needs: [out]
    with: {{ url: "http://127.0.0.1:{port}/version/", samples: 6, expect: {{ json: {{ host: web1 }} }} }}
  - {{ id: back, uses: lb, needs: [only-web1], with: {{ action: register, backend: app, server: web2, socket: "{s}" }} }}
  - {{ id: healthy, uses: lb, needs: [back], with: {{ action: wait-healthy, backend: app, server: web2, socket: "{s}", interval: 50ms, timeout: 20s }} }}
  - {{ id: status, uses: lb, needs: [healthy], with: {{ action: status, backend: app, socket: "{s}", config: "{cfg}" }} }}
"#,
        s = socket(&lab),
        port = lab.info["haproxy"]["port"],
        cfg = lab.info["haproxy"]["config"].as_str().unwrap(),
    );
    let run = Run::new().playbook("cycle", &yaml);
    // plan --live shows where each server stands now, and changes nothing.
    run.exec(["plan", "cycle", "--live"])
        .exit(0)
        .stdout_has("live: now: web2: ready up")
        .stdout_has("live: now: web1: ready up");
    assert_eq!(lab.server_state("app", "web2").0, 0, "plan --live left web2 ready");
    let out = run.exec(["run", "cycle", "--output", "json"]).exit(0);
    let (admin, op, _) = lab.server_state("app", "web2");
    assert_eq!((admin, op), (0, 2), "web2 is ready and up again");
    // status lists both servers; the lab's haproxy.cfg keeps state over reloads.
    let status = out.outputs_of("status");
    let servers = status["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{status}");
    assert!(
        servers.iter().all(|s| s["state"] == "ready" && s["health"] == "up"),
        "{status}"
    );
    assert!(status.get("warning").is_none(), "{status}");
}

#[test]
fn status_warns_when_runtime_changes_would_be_lost_on_reload() {
    let lab = Lab::start(1);
    let run = Run::new().file("haproxy.cfg", "global\n  maxconn 10\ndefaults\n  mode http\n");
    let yaml = format!(
        "apiVersion: runbook/v1\nname: s\nversion: 1\nsteps:\n  - {{ id: s, uses: lb, with: {{ action: status, backend: app, socket: \"{}\", config: \"{}/haproxy.cfg\" }} }}\n",
        socket(&lab),
        run.path().display()
    );
    run.playbook("s", &yaml)
        .exec(["run", "s"])
        .exit(0)
        .stdout_has("web1: ready up")
        .stdout_has(
            "no server-state-file: runtime changes (drain, maint, weights, maps) are lost when HAProxy reloads",
        );
}

#[test]
fn blue_green_switch_moves_traffic_and_is_idempotent() {
    let lab = Lab::start(2);
    let bg = lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap() as u16;
    let host = || {
        let body = support::http_get("127.0.0.1", bg, "/version/");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["host"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(host(), "web1", "blue serves first");
    let yaml = format!(
        "apiVersion: runbook/v1\nname: bg\nversion: 1\ninputs:\n  to: {{ type: string }}\nsteps:\n  - {{ id: switch, uses: lb, with: {{ action: switch, backend: app, socket: \"{}\", map: \"{}\", to: \"{{{{inputs.to}}}}\" }} }}\n",
        socket(&lab),
        lab.info["haproxy"]["map"].as_str().unwrap()
    );
    let run = Run::new().playbook("bg", &yaml);
    run.exec(["run", "bg", "--set", "to=green"])
        .exit(0)
        .stdout_has("traffic: blue -> green");
    for _ in 0..4 {
        assert_eq!(host(), "web2", "green serves after the switch");
    }
    run.exec(["run", "bg", "--set", "to=green"])
        .exit(0)
        .stdout_has("traffic: green -> green");
    run.exec(["run", "bg", "--set", "to=blue"]).exit(0);
    assert_eq!(host(), "web1", "and back");
}

#[test]
fn a_split_gives_the_new_colour_its_share_of_users_by_server_weights() {
    // blue: web1, web2; green: web3, web4; the ramp backend holds all four.
    let lab = Lab::start(4);
    let bg = lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap() as u16;
    let map = lab.info["haproxy"]["map"].as_str().unwrap().to_owned();
    // The share of 200 requests through the blue-green frontend that green served.
    let green_share = || {
        let green = (0..200)
            .filter(|_| {
                let body = support::http_get("127.0.0.1", bg, "/version/");
                let host = serde_json::from_str::<serde_json::Value>(&body).unwrap()["host"].clone();
                host == "web3" || host == "web4"
            })
            .count();
        green as f64 / 200.0
    };
    let playbook = |name: &str, backend: &str| {
        format!(
            "apiVersion: runbook/v1\nname: {name}\nversion: 1\ninputs:\n  share: {{ type: string }}\nsteps:\n  - {{ id: split, uses: lb, with: {{ action: split, socket: \"{}\", backend: {backend}, from: blue, to: green, share: \"{{{{inputs.share}}}}\" }} }}\n",
            socket(&lab)
        )
    };
    let run = Run::new()
        .playbook("ramp", &playbook("ramp", "ramp"))
        .playbook("wrong", &playbook("wrong", "blue"));
    // `plan --live` reads the split as it is, changing nothing.
    run.exec(["plan", "ramp", "--live", "--set", "share=25"])
        .exit(0)
        .stdout_has("now: green gets 50% of the traffic, blue the rest");
    run.exec(["run", "ramp", "--set", "share=0"])
        .exit(0)
        .stdout_has("haproxy ramp: green 50% -> 0% of the traffic, blue the rest");
    // Users reach the ramp backend: all still on blue.
    lab.haproxy(&format!("set map {map} active ramp"));
    assert!(green_share() == 0.0, "a share of 0 sends nobody to green");
    let out = run
        .exec(["run", "ramp", "--set", "share=25%", "--output", "json"])
        .exit(0);
    assert_eq!(out.outputs_of("split")["share"].as_f64().unwrap().round(), 25.0);
    let share = green_share();
    println!("asked 25%, green served {:.1}%", share * 100.0);
    assert!((share - 0.25).abs() < 0.05, "green served {share}");
    run.exec(["run", "ramp", "--set", "share=100"]).exit(0);
    assert!(green_share() == 1.0, "all on green");
    // Idempotent: the same share again changes nothing.
    let again = run
        .exec(["run", "ramp", "--set", "share=100", "--output", "json"])
        .exit(0);
    assert_eq!(again.outputs_of("split")["changed"], false);
    // A backend that does not hold both colours is refused, its weights
    // untouched; so is a share beyond 100.
    // Each server's name and weight (srv_name, srv_uweight).
    let weights = |backend: &str| -> Vec<(String, String)> {
        lab.haproxy(&format!("show servers state {backend}"))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Some(((*f.get(3)?).to_owned(), (*f.get(7)?).to_owned()))
            })
            .collect()
    };
    let before = weights("blue");
    assert_eq!(before.len(), 2, "{before:?}");
    run.exec(["run", "wrong", "--set", "share=50"])
        .exit(1)
        .stdout_has("backend `blue` has no server of `green`");
    assert_eq!(weights("blue"), before);
    run.exec(["run", "ramp", "--set", "share=150"])
        .exit(1)
        .stdout_has("`share` must be a percent from 0 to 100");
    assert!(green_share() == 1.0, "nothing changed");
}

#[test]
fn a_missing_server_or_backend_is_named() {
    let lab = Lab::start(1);
    let yaml = format!(
        "apiVersion: runbook/v1\nname: m\nversion: 1\nsteps:\n  - {{ id: d, uses: lb, with: {{ action: drain, backend: app, server: web7, socket: \"{}\" }} }}\n",
        socket(&lab)
    );
    let run = Run::new().playbook("m", &yaml);
    run.exec(["plan", "m", "--live"])
        .exit(0)
        .stdout_has("live: cannot look: haproxy app has no server `web7`");
    run.exec(["run", "m"])
        .exit(1)
        .stdout_has("haproxy app has no server `web7` (it has: web1)");
    let yaml = format!(
        "apiVersion: runbook/v1\nname: b\nversion: 1\nsteps:\n  - {{ id: s, uses: lb, with: {{ action: status, backend: api, socket: \"{}\" }} }}\n",
        socket(&lab)
    );
    Run::new()
        .playbook("b", &yaml)
        .exec(["run", "b"])
        .exit(1)
        .stdout_has("HAProxy has no backend `api`");
    // A drain without `server` is refused before anything runs.
    Run::new()
        .playbook("n", "apiVersion: runbook/v1\nname: n\nversion: 1\nsteps:\n  - { id: d, uses: lb, with: { action: drain, backend: app } }\n")
        .exec(["validate", "n"])
        .exit(2)
        .stderr_has("server");
}

#[test]
fn aws_elbv2_register_deregister_and_switch_against_moto() {
    let moto = support::Moto::start();
    let aws = moto.fixture(&["setup"]);
    let (blue, green, listener) = (
        aws["blue"].as_str().unwrap(),
        aws["green"].as_str().unwrap(),
        aws["listener"].as_str().unwrap(),
    );
    let step = |id: &str, needs: &str, with: &str| {
        format!(
            "  - {{ id: {id}, uses: lb, {needs} with: {{ driver: aws-elbv2, endpoint: \"{}\", region: us-east-1, target_group: \"{blue}\", port: 8000, {with} }} }}\n",
            moto.endpoint
        )
    };
    let mut yaml = String::from("apiVersion: runbook/v1\nname: elb\nversion: 1\nsteps:\n");
    yaml.push_str(&step("in", "", "action: register, server: 10.0.1.10"));
    yaml.push_str(&step(
        "healthy",
        "needs: [in],",
        "action: wait-healthy, server: 10.0.1.10, timeout: 30s",
    ));
    let run = Run::new()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .playbook("elb", &yaml);
    run.exec(["run", "elb"])
        .exit(0)
        .stdout_has("10.0.1.10: maint -> ready")
        .stdout_has("healthy after");
    let shown = moto.fixture(&["show", blue, listener]);
    assert_eq!(shown["targets"], serde_json::json!(["10.0.1.10:8000=healthy"]));

    // Out again, waiting until ELB reports it unused; twice (idempotent).
    let mut out_yaml = String::from("apiVersion: runbook/v1\nname: out\nversion: 1\nsteps:\n");
    out_yaml.push_str(&step("out", "", "action: deregister, server: 10.0.1.10"));
    let run = run.playbook("out", &out_yaml);
    run.exec(["run", "out"]).exit(0).stdout_has("10.0.1.10: ready -> maint");
    assert_eq!(
        moto.fixture(&["show", blue, listener])["targets"],
        serde_json::json!([])
    );
    run.exec(["run", "out"]).exit(0).stdout_has("10.0.1.10: maint -> maint");

    // Blue-green: the listener forwards to green, then stays there.
    let mut sw = String::from("apiVersion: runbook/v1\nname: sw\nversion: 1\nsteps:\n");
    sw.push_str(&step(
        "switch",
        "",
        &format!("action: switch, listener: \"{listener}\", to: \"{green}\""),
    ));
    let run = run.playbook("sw", &sw);
    run.exec(["run", "sw", "--output", "json"]).exit(0);
    assert_eq!(moto.fixture(&["show", blue, listener])["listener_forwards_to"], green);
    let again = run.exec(["run", "sw", "--output", "json"]).exit(0);
    assert_eq!(again.outputs_of("switch")["changed"], false);

    // A ramp: a quarter of the traffic back to blue, by the listener's
    // weighted target groups; `active` names both with their shares.
    let playbook = |name: &str, id: &str, with: &str| {
        let mut yaml = format!("apiVersion: runbook/v1\nname: {name}\nversion: 1\nsteps:\n");
        yaml.push_str(&step(id, "", &format!("listener: \"{listener}\", {with}")));
        yaml
    };
    let run = run
        .playbook(
            "ramp",
            &playbook(
                "ramp",
                "split",
                &format!("action: split, from: \"{green}\", to: \"{blue}\", share: \"25%\""),
            ),
        )
        .playbook("where", &playbook("where", "now", "action: active"));
    let split = run.exec(["run", "ramp", "--output", "json"]).exit(0);
    assert_eq!(split.outputs_of("split")["share"], 25.0);
    let shown = moto.fixture(&["show", blue, listener]);
    assert_eq!(shown["weights"], serde_json::json!({ green: 75, blue: 25 }));
    assert_eq!(shown["listener_forwards_to"], serde_json::Value::Null);
    let now = run.exec(["run", "where", "--output", "json"]).exit(0);
    let target = now.outputs_of("now")["target"].as_str().unwrap().to_owned();
    assert!(
        target.contains(&format!("{green} (75%)")) && target.contains(&format!("{blue} (25%)")),
        "{target}"
    );
    // A split that would leave traffic on a third group is refused; nothing changes.
    let other = green.replace("/green/", "/other/");
    let run = run.playbook(
        "stray",
        &playbook(
            "stray",
            "split",
            &format!("action: split, from: \"{other}\", to: \"{blue}\", share: 50"),
        ),
    );
    run.exec(["run", "stray"]).exit(1).stdout_has("neither `from` nor `to`");
    assert_eq!(moto.fixture(&["show", blue, listener])["weights"], shown["weights"]);
    // Switching back from a split between the same two sides is allowed.
    let run = run.playbook(
        "back",
        &playbook(
            "back",
            "switch",
            &format!("action: switch, from: \"{blue}\", to: \"{green}\""),
        ),
    );
    run.exec(["run", "back"]).exit(0);
    assert_eq!(moto.fixture(&["show", blue, listener])["listener_forwards_to"], green);
}
