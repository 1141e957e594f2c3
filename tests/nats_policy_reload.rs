//! Policy reload against a real nats-server: SIGHUP puts a changed policy directory in
//! force without a restart; a directory with a broken file is refused whole and the
//! running policies keep deciding; `check-policies` says the same offline (exit 2).
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use beamline_router::client::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};
use support::{free_port, http_get, metric, NatsServer, RouterProcess};

fn only(provider: &str) -> String {
    format!(r#"{{"providers":[{{"name":"{provider}","weight":1}}]}}"#)
}

/// The provider and the policy revision a decision names.
async fn provider_of(client: &DecideClient, id: &str, router: &RouterProcess) -> (String, String) {
    let opts = DecideOptions::default().with_timeout(Duration::from_secs(10));
    let reply = client
        .decide(
            DecideRequestBuilder::new("acme", "text.generate")
                .request_id(id)
                .payload(support::payload()),
            &opts,
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}; router log:\n{}", router.log()));
    match reply {
        DecideReply::Decision(d) => (
            d.decision.provider_id,
            d.decision
                .policy_revision
                .expect("every decision names its policy revision"),
        ),
        other => panic!("{id}: {other:?}"),
    }
}

fn check_policies(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beamline-router"))
        .arg("check-policies")
        .arg(dir)
        .output()
        .expect("run check-policies");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_set_and_refuses_a_broken_one_whole() {
    let server = NatsServer::start();
    let policies = tempfile::tempdir().unwrap();
    let acme = policies.path().join("acme");
    std::fs::create_dir(&acme).unwrap();
    std::fs::write(acme.join("default.json"), only("openai")).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();
    let (provider, first) = provider_of(&client, "reload-1", &router).await;
    assert_eq!(provider, "openai");

    // A changed file, then SIGHUP: the next decision follows it, no restart.
    std::fs::write(acme.join("default.json"), only("anthropic")).unwrap();
    assert_eq!(
        check_policies(policies.path()).0,
        0,
        "the new set is valid offline too"
    );
    router.hang_up();
    tokio::task::block_in_place(|| router.wait_log("policies reloaded", Duration::from_millis(25)));
    let (provider, second) = provider_of(&client, "reload-2", &router).await;
    assert_eq!(provider, "anthropic");
    assert_ne!(first, second, "the reply names the new revision");

    // A set with one broken file (and one good change) is refused whole.
    std::fs::write(acme.join("default.json"), only("openai")).unwrap();
    std::fs::write(
        acme.join("broken.json"),
        r#"{"providers":[{"name":"openai","weight":-3}]}"#,
    )
    .unwrap();
    let (code, text) = check_policies(policies.path());
    assert_eq!(code, 2, "check-policies refuses the set: {text}");
    assert!(
        text.contains("broken.json"),
        "the error names the file: {text}"
    );
    router.hang_up();
    tokio::task::block_in_place(|| {
        router.wait_log("policy reload refused", Duration::from_millis(25))
    });
    let log = router.log();
    assert!(
        log.contains("broken.json"),
        "the refusal names the file:\n{log}"
    );
    assert_eq!(
        provider_of(&client, "reload-3", &router).await,
        ("anthropic".to_string(), second),
        "the running set stays in force (the good change in the refused set included)"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = tokio::task::block_in_place(|| http_get(port, "/metrics"));
        let (ok, refused) = (
            metric(&text, "router_policy_reloads_total"),
            metric(&text, "router_policy_reloads_refused_total"),
        );
        if (ok, refused) == (Some(1), Some(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reloads {ok:?}, refused {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An operator's authenticated `reload_policies` does what SIGHUP does, and answers with
/// the outcome: refused without the token, `reloaded` with the count, `reload_refused`
/// naming the broken file (the running set stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_request_reloads_and_answers_the_outcome() {
    const TOKEN: &str = "reload-admin-token-0123";
    let server = NatsServer::start();
    let policies = tempfile::tempdir().unwrap();
    let acme = policies.path().join("acme");
    std::fs::create_dir(&acme).unwrap();
    std::fs::write(acme.join("default.json"), only("openai")).unwrap();
    let router = RouterProcess::start(&server.url(), policies.path(), &["--admin-token", TOKEN]);
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats.clone()).await.unwrap();
    let reload = |token: Option<&'static str>| {
        let nats = nats.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(t) = token {
                headers.insert("Authorization", format!("Bearer {t}").as_str());
            }
            let reply = nats
                .request_with_headers(
                    "beamline.router.v1.admin.reload_policies",
                    headers,
                    "{}".into(),
                )
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    assert_eq!(provider_of(&client, "adm-1", &router).await.0, "openai");

    std::fs::write(acme.join("default.json"), only("anthropic")).unwrap();
    let refused = reload(None).await;
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    assert_eq!(
        provider_of(&client, "adm-2", &router).await.0,
        "openai",
        "not reloaded"
    );
    let done = reload(Some(TOKEN)).await;
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["reloaded"], true, "{done}");
    assert_eq!(done["policies"], 1, "{done}");
    assert_eq!(provider_of(&client, "adm-3", &router).await.0, "anthropic");

    std::fs::write(acme.join("broken.json"), "{not json").unwrap();
    let broken = reload(Some(TOKEN)).await;
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["error"]["code"], "reload_refused", "{broken}");
    assert!(
        broken["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("broken.json"),
        "the answer names the file: {broken}"
    );
    assert_eq!(provider_of(&client, "adm-4", &router).await.0, "anthropic");
}
