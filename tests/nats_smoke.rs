//! `scripts/smoke.sh` (and `beamline-router smoke` behind it) against a real deployment:
//! exit 0 with every check ok on a healthy router; exit 1 naming the failed check for a
//! tenant without a policy, and when no router serves the server at all.
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::process::Command;

use support::{acme_policies, free_port, NatsServer, RouterProcess};

fn smoke(args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/smoke.sh"))
        .args(args)
        .env("ROUTER_BIN", env!("CARGO_BIN_EXE_beamline-router"))
        .output()
        .expect("run smoke.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_smoke_check_passes_a_healthy_deployment_and_names_what_fails() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );

    let (code, text) = smoke(&[&server.url(), &listen, "acme"]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for check in [
        "ok   decide: provider",
        "ok   status: inactive",
        "ok   readyz: 200",
    ] {
        assert!(text.contains(check), "{check:?} missing:\n{text}");
    }

    let (code, text) = smoke(&[&server.url(), &listen, "globex"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL decide") && text.contains("policy_not_found"),
        "{text}"
    );

    // No router left: the round trip and the status both fail.
    assert!(router.stop(std::time::Duration::from_secs(15)).success());
    let (code, text) = smoke(&[&server.url()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL decide") && text.contains("FAIL status"),
        "{text}"
    );
}
