//! The deploy playbooks of the library (`playbooks/`) against the lab's whole
//! service: HAProxy in front of app hosts reached over ssh, each checking its
//! PostgreSQL and Redis. Each test asserts what an operator would check: which
//! release every host serves, what HAProxy routes to, and that users saw no
//! failed request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Load};

const ROLLING: &[&str] = &["lb_socket", "app_port", "deploy_cmd", "restart_cmd", "rollback_cmd"];

fn versions(lab: &Lab, hosts: usize) -> Vec<String> {
    (0..hosts)
        .map(|i| {
            let v: serde_json::Value = serde_json::from_str(&lab.get(i, "/version/")).unwrap();
            v["version"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn deploys(lab: &Lab, i: usize) -> Vec<String> {
    lab.host_file(i, "deploys.log").lines().map(str::to_owned).collect()
}

#[test]
fn rolling_deploy_under_load_serves_the_release_everywhere_with_no_failed_request() {
    let lab = Lab::stack(3);
    let port = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    let load = Load::start(port, "/version/", 4);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab.play(&lab.runbook(), "rolling-deploy", ROLLING, &["release=v2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let count = load.stop();
    let out = out.exit(0);
    assert_eq!(versions(&lab, 3), ["v2", "v2", "v2"], "{}", out.stdout);
    for (i, host) in ["web1", "web2", "web3"].iter().enumerate() {
        let (admin, op, _) = lab.server_state("app", host);
        assert_eq!((admin, op), (0, 2), "{host} is back in rotation and UP");
        assert_eq!(deploys(&lab, i), ["v2"], "{host} was deployed once");
    }
    // What users saw: every request answered, none failed, none refused.
    assert_eq!(count.http_errors, 0, "{count:?}");
    assert_eq!(count.connection_errors, 0, "{count:?}");
    assert!(count.ok > 100, "the load ran throughout: {count:?}");
    // Through the load balancer, only the new release is served.
    for _ in 0..6 {
        assert!(lab.get_via_lb("/version/").contains("\"v2\""));
    }
}

#[test]
fn a_host_that_fails_its_health_gate_is_rolled_back_and_left_out_then_resume_finishes() {
    let lab = Lab::stack(3);
    // Release v3 starts badly on web2 only.
    let artifacts = lab.dir.path().join("artifacts/v3");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("BROKEN"), "web2\n").unwrap();
    let run = lab.runbook();
    let out = lab.play(&run, "rolling-deploy", ROLLING, &["release=v3"]).exit(1);
    let id = out.run_id();
    // web1 was done; web2 is back on v1 and out of rotation; web3 was not touched.
    assert_eq!(versions(&lab, 3), ["v3", "v1", "v1"], "{}", out.stdout);
    assert_eq!(deploys(&lab, 0), ["v3"]);
    assert_eq!(deploys(&lab, 1), ["v3", "v1"], "web2 deployed, then rolled back");
    assert!(deploys(&lab, 2).is_empty(), "web3 untouched");
    assert_eq!(lab.server_state("app", "web1").0, 0, "web1 in rotation");
    assert_eq!(lab.server_state("app", "web2").0 & 1, 1, "web2 left in maint");
    assert_eq!(lab.server_state("app", "web3").0, 0, "web3 in rotation");
    for _ in 0..6 {
        assert!(!lab.get_via_lb("/version/").contains("web2"));
    }
    // Fix the release, resume: web2 is deployed again from its first step, web3
    // for the first time, web1 not again.
    std::fs::remove_file(artifacts.join("BROKEN")).unwrap();
    let out = run.exec(["resume", &id]).exit(0);
    assert_eq!(versions(&lab, 3), ["v3", "v3", "v3"], "{}", out.stdout);
    assert_eq!(deploys(&lab, 0), ["v3"], "web1 not redeployed");
    assert_eq!(deploys(&lab, 1), ["v3", "v1", "v3"]);
    assert_eq!(deploys(&lab, 2), ["v3"]);
    for host in ["web1", "web2", "web3"] {
        assert_eq!(lab.server_state("app", host).0, 0, "{host} in rotation");
    }
}
