//! TLS and authentication against a real nats-server. Certificates are generated here
//! with rcgen into temporary directories; no key is committed.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::{acme_policies, NatsServer, RouterProcess};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM
/// files under `dir` with the given prefix.
fn pki(dir: &Path, prefix: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{prefix} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["beamline-router".into()]);
    let write = |name: &str, text: &str| {
        let path = dir.join(format!("{prefix}-{name}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

fn mtls_server(pki: &Pki) -> NatsServer {
    NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string()
    ))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn an_mtls_server_accepts_the_router() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path(), "good");
    let server = mtls_server(&pki);
    let policies = acme_policies();
    let (ca, cert, key) = (s(&pki.ca), s(&pki.client_cert), s(&pki.client_key));
    let mut router = RouterProcess::spawn(
        &server.tls_url(),
        policies.path(),
        &[],
        &[
            ("BEAMLINE_TLS_CA_FILE", &ca),
            ("BEAMLINE_TLS_CERT_FILE", &cert),
            ("BEAMLINE_TLS_KEY_FILE", &key),
            ("BEAMLINE_TLS_REQUIRE", "true"),
        ],
    );
    router.wait_ready();
    let log = router.log();
    let line = log
        .lines()
        .find(|l| l.contains("connected to nats-server"))
        .unwrap_or_default();
    println!("router: {line}");
    assert!(log.contains("tls_required=true"), "{log}");
    let status = router.stop(Duration::from_secs(15));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
}

#[test]
fn the_router_refuses_a_server_whose_certificate_does_not_chain_to_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let server_pki = pki(certs.path(), "server-side");
    let other = pki(certs.path(), "other");
    let server = mtls_server(&server_pki);
    let policies = acme_policies();
    // The router trusts another CA (its client certificate is from that CA too).
    let (ca, cert, key) = (s(&other.ca), s(&other.client_cert), s(&other.client_key));
    let mut router = RouterProcess::spawn(
        &server.tls_url(),
        policies.path(),
        &[],
        &[
            ("BEAMLINE_TLS_CA_FILE", &ca),
            ("BEAMLINE_TLS_CERT_FILE", &cert),
            ("BEAMLINE_TLS_KEY_FILE", &key),
        ],
    );
    let status = router.wait_exit(Duration::from_secs(20));
    let log = router.log();
    println!("router refused: {}", log.lines().last().unwrap_or_default());
    assert!(!status.success(), "{log}");
    assert!(!log.contains("router ready"), "{log}");
    assert!(log.contains("cannot connect to NATS"), "{log}");
}

#[test]
fn the_router_refuses_plain_text_when_tls_is_required() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(
        &server.url(),
        policies.path(),
        &[],
        &[("BEAMLINE_TLS_REQUIRE", "true")],
    );
    let status = router.wait_exit(Duration::from_secs(20));
    let log = router.log();
    println!("router refused: {}", log.lines().last().unwrap_or_default());
    assert!(!status.success(), "{log}");
    assert!(!log.contains("router ready"), "{log}");
}

/// A router with these environment variables connects, gets ready and stops cleanly.
fn assert_accepted(server: &NatsServer, env: &[(&str, &str)]) {
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(&server.url(), policies.path(), &[], env);
    router.wait_ready();
    assert!(
        router.stop(Duration::from_secs(15)).success(),
        "{}",
        router.log()
    );
}

/// A router with these environment variables is refused: it exits non-zero, never ready.
fn assert_refused(server: &NatsServer, env: &[(&str, &str)], what: &str) {
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(&server.url(), policies.path(), &[], env);
    let status = router.wait_exit(Duration::from_secs(20));
    let log = router.log();
    println!("{what}: {}", log.lines().last().unwrap_or_default());
    assert!(!status.success(), "{log}");
    assert!(!log.contains("router ready"), "{log}");
}

#[test]
fn user_and_password_are_sent_and_a_wrong_password_is_refused() {
    let server = NatsServer::start_with_config(
        "authorization {\n  user: router\n  password: \"s3cret-pass\"\n}\n",
    );
    assert_accepted(
        &server,
        &[
            ("BEAMLINE_NATS_USER", "router"),
            ("BEAMLINE_NATS_PASSWORD", "s3cret-pass"),
        ],
    );
    assert_refused(
        &server,
        &[
            ("BEAMLINE_NATS_USER", "router"),
            ("BEAMLINE_NATS_PASSWORD", "wrong"),
        ],
        "wrong password",
    );
}

#[test]
fn a_token_is_sent() {
    let server = NatsServer::start_with_config("authorization {\n  token: \"t0ken-t0ken\"\n}\n");
    assert_accepted(&server, &[("BEAMLINE_NATS_TOKEN", "t0ken-t0ken")]);
}

/// NKey auth: the server knows the user's public key only; the router signs the
/// server's nonce with the seed from `nats.nkey_seed_file`. Keys are made here.
#[test]
fn an_nkey_signs_the_nonce_and_a_foreign_key_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}\n",
        user.public_key()
    ));
    let dir = tempfile::tempdir().unwrap();
    let seed_file = |name: &str, kp: &nkeys::KeyPair| {
        let path = dir.path().join(name);
        std::fs::write(&path, kp.seed().unwrap()).unwrap();
        path.display().to_string()
    };
    let good_seed = seed_file("router.nk", &user);
    assert_accepted(
        &server,
        &[("BEAMLINE_NATS_NKEY_SEED_FILE", good_seed.as_str())],
    );
    let foreign_seed = seed_file("other.nk", &nkeys::KeyPair::new_user());
    assert_refused(
        &server,
        &[("BEAMLINE_NATS_NKEY_SEED_FILE", foreign_seed.as_str())],
        "foreign nkey",
    );
}

/// A NATS JWT signed by `issuer` (ed25519-nkey), as nats-server's decentralized auth
/// reads it; `nats` holds the type-specific claims.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{subject}-{name}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = b64.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64.encode(signature))
}

/// `.creds` auth (decentralized JWT): an operator, an account with JetStream, and a user
/// made here; the server trusts the operator and preloads the account; the router
/// presents the user's JWT and signs the nonce with its seed. A user signed by another
/// account key is refused.
#[test]
fn a_creds_file_authenticates_in_operator_mode() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "router-account",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    );
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let server = NatsServer::start_with_config(&format!(
        "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acct}: \"{account_jwt}\"\n}}\n",
        sys = system.public_key(),
        acct = account.public_key()
    ));
    let dir = tempfile::tempdir().unwrap();
    let creds = |name: &str, signer: &nkeys::KeyPair| {
        let user = nkeys::KeyPair::new_user();
        let user_jwt = jwt(
            signer,
            &user.public_key(),
            name,
            serde_json::json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        );
        let path = dir.path().join(format!("{name}.creds"));
        std::fs::write(
            &path,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed().unwrap()
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let good = creds("router", &account);
    assert_accepted(&server, &[("BEAMLINE_NATS_CREDS_FILE", good.as_str())]);
    let forged = creds("forged", &nkeys::KeyPair::new_account());
    assert_refused(
        &server,
        &[("BEAMLINE_NATS_CREDS_FILE", forged.as_str())],
        "forged creds",
    );
}

#[test]
fn check_config_names_key_value_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router.toml");
    std::fs::write(
        &file,
        "[decide]\nmax_deliver = 1\n[router]\npolicies_dir = \"/tmp\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beamline-router"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("check-config: {stderr}");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("`decide.max_deliver` = 1: must be at least 2"),
        "{stderr}"
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/router.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beamline-router"))
        .arg("check-config")
        .arg(&example)
        .env("BEAMLINE_ROUTER_POLICIES_DIR", dir.path())
        .output()
        .unwrap();
    println!("example: {}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // serve refuses the same file before touching the network.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beamline-router"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to start"));
}

/// Started before NATS (as an orchestrator may): the router retries its first
/// connection, with a log line, and becomes ready once the server is up.
#[test]
fn a_router_started_before_nats_waits_for_it() {
    let port = support::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(&url, policies.path(), &[], &[]);
    router.wait_log("retrying the first connection", Duration::from_millis(25));
    assert!(router.is_running(), "it waits, it does not exit");
    let _server = NatsServer::start_on(port);
    router.wait_ready();
    assert!(
        router.stop(Duration::from_secs(15)).success(),
        "{}",
        router.log()
    );
}

/// The client commands connect as `serve` does: `decide --config` sends the file's
/// token and gets a decision from a token-protected server; without it, it is refused.
#[test]
fn the_decide_command_connects_with_the_config_file_credentials() {
    let server = NatsServer::start_with_config("authorization {\n  token: \"t0ken-t0ken\"\n}\n");
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(
        &server.url(),
        policies.path(),
        &[],
        &[("BEAMLINE_NATS_TOKEN", "t0ken-t0ken")],
    );
    router.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurls = [{:?}]\ntoken = \"t0ken-t0ken\"\n[router]\npolicies_dir = {:?}\n",
            server.url(),
            policies.path().display().to_string()
        ),
    )
    .unwrap();
    let decide = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_beamline-router"))
            .args(["decide", "--tenant", "acme", "--task-type", "text.generate"])
            .args(args)
            .output()
            .expect("run decide")
    };
    let with = decide(&["--config", config.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let reply: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let without = decide(&["--nats-url", &server.url()]);
    assert!(!without.status.success(), "no token: refused");
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    assert!(router.stop(Duration::from_secs(15)).success());
}
