//! The configuration's tests: loading, validation messages, and the declarations held
//! to docs/CONFIG.md, the example file and the command line.

use std::collections::BTreeMap;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A valid config around `extra` (TOML appended after a [router] with a real dir).
fn settings(extra: &str) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir();
    let text = format!(
        "[router]\npolicies_dir = {:?}\n{extra}",
        dir.display().to_string()
    );
    let s = Settings::parse(&text, no_env)?;
    s.validate()?;
    Ok(s)
}

fn refusal(extra: &str) -> ConfigError {
    settings(extra).expect_err("must be refused")
}

#[test]
fn defaults_with_a_policies_dir_are_valid() {
    let s = settings("").unwrap();
    assert_eq!(s.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert_eq!(s.results.max_deliver, 10);
    assert!(!s.acks.enabled);
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/router.example.toml");
    let mut s = Settings::load(Some(&path), no_env, &Flags::default()).unwrap();
    s.router.policies_dir = Some(std::env::temp_dir());
    s.validate().unwrap();
}

#[test]
fn output_streams_dedupe_over_the_longest_redelivery_span() {
    let s = settings("").unwrap();
    // results: 10 deliveries x (ack_wait 30 s + longest nak 30 s), twice.
    assert_eq!(s.output_duplicate_window(), Duration::from_secs(1_200));
    let s = settings("[results]\nmax_deliver = 2\n[decide]\nmax_deliver = 2\n").unwrap();
    assert_eq!(s.output_duplicate_window(), Duration::from_secs(240));
    let s = settings("[streams]\noutput_duplicate_window_ms = 5000\n").unwrap();
    assert_eq!(s.output_duplicate_window(), Duration::from_secs(5));
    let topology = crate::shell::nats::Topology::from_settings(&settings("").unwrap());
    let window = |name: &str| topology.streams.iter().find(|t| t.0 == name).unwrap().3;
    assert_eq!(window("BEAMLINE_DECIDE"), Duration::from_secs(120));
    assert_eq!(window("BEAMLINE_ASSIGNMENTS"), Duration::from_secs(1_200));
    assert_eq!(window("BEAMLINE_USAGE"), Duration::from_secs(1_200));
    assert_eq!(window("BEAMLINE_DLQ"), Duration::from_secs(1_200));
}

/// The first code span of a documentation cell, or the cell itself.
fn code(cell: &str) -> &str {
    let mut spans = cell.split('`');
    match (spans.next(), spans.next()) {
        (Some(_), Some(span)) => span,
        _ => cell,
    }
}

/// A key's default as docs/CONFIG.md writes it: the value (strings bare, `""` when
/// empty, lists as JSON), or `None` for a key unset by default.
fn documented_default(defaults: &toml::Table, key: &Key) -> Option<String> {
    let value = defaults[key.section].as_table()?.get(key.name)?;
    Some(match value {
        toml::Value::String(s) if s.is_empty() => "\"\"".to_string(),
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.as_str().into(),
                    toml::Value::Integer(n) => (*n).into(),
                    other => panic!("{}: unexpected list item {other}", key.path()),
                })
                .collect();
            serde_json::to_string(&items).unwrap()
        }
        other => other.to_string(),
    })
}

/// The rows of docs/CONFIG.md's key table: `section.key` -> (default, env, flag).
fn documented_keys() -> BTreeMap<String, (String, String, String)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
        .unwrap();
    let table = &doc[doc.find("## Keys").expect("a Keys section")..];
    let table = &table[..table[3..].find("\n## ").map_or(table.len(), |i| i + 3)];
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").map(str::trim).collect();
            let key = code(cells[0].trim_start_matches("| ")).to_string();
            (
                key,
                (
                    cells[1].to_string(),
                    cells[2].to_string(),
                    cells[3].to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn every_key_is_documented() {
    let documented = documented_keys();
    let defaults = match toml::Value::try_from(Settings::default()).unwrap() {
        toml::Value::Table(t) => t,
        other => panic!("{other}"),
    };
    for key in KEYS {
        let path = key.path();
        let Some((default, env, flag)) = documented.get(&path) else {
            panic!("{path} is not in docs/CONFIG.md's key table");
        };
        assert_eq!(code(env), key.env(), "{path}: environment variable");
        match key.flag {
            Some(f) => assert!(
                code(flag).starts_with(&format!("--{}", f.long)),
                "{path}: the flag column should name --{}: {flag:?}",
                f.long
            ),
            None => assert!(!flag.contains("--"), "{path} has no flag: {flag:?}"),
        }
        match documented_default(&defaults, key) {
            Some(value) => assert_eq!(code(default), value, "{path}: default"),
            None => assert!(
                default.starts_with("unset") || default.starts_with("**required**"),
                "{path} is unset by default, the docs say {default:?}"
            ),
        }
    }
    for path in documented.keys() {
        assert!(
            KEYS.iter().any(|k| &k.path() == path),
            "docs/CONFIG.md documents {path}, which is not declared"
        );
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
        .unwrap();
    for env in KEYS.iter().filter_map(|k| k.flag?.env) {
        assert!(doc.contains(&format!("`{env}`")), "{env} undocumented");
    }
}

#[test]
fn every_key_is_declared_with_documentation_and_at_most_one_flag_each() {
    // A key cannot be declared without a type or a default: `declare_settings!` does not
    // accept one. Its doc comment is its flag's help and must say something.
    let mut flags = BTreeMap::new();
    let mut envs = BTreeMap::new();
    for key in KEYS {
        assert!(
            key.help().len() >= 8,
            "{}: declare a doc comment saying what the key is for",
            key.path()
        );
        if let Some(flag) = key.flag {
            assert_ne!(flag.long, "config", "--config is the file's flag");
            if let Some(other) = flags.insert(flag.long, key.path()) {
                panic!("--{} is declared by {other} and {}", flag.long, key.path());
            }
            if let Some(env) = flag.env {
                assert!(
                    KEYS.iter().all(|k| k.env() != env),
                    "{env} would be both a flag's and a key's variable"
                );
                assert!(envs.insert(env, key.path()).is_none(), "{env} used twice");
            }
        }
    }
    let paths: std::collections::BTreeSet<String> = KEYS.iter().map(Key::path).collect();
    assert_eq!(paths.len(), KEYS.len(), "a key declared twice");
}

#[test]
fn the_example_config_names_every_key() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/router.example.toml"),
    )
    .unwrap();
    // Keys set or commented out, each under its section.
    let mut section = "";
    let mut named = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = s;
        } else if let Some((key, _)) = line.split_once(" = ") {
            named.insert(format!("{section}.{}", key.trim()));
        }
    }
    for key in KEYS {
        assert!(
            named.contains(&key.path()),
            "config/router.example.toml lacks {}",
            key.path()
        );
    }
}

/// `serve`'s flags as `main` builds them.
fn flags(args: &[&str]) -> Flags {
    use clap::{Args as _, FromArgMatches as _};
    let cmd = Flags::augment_args(clap::Command::new("serve").no_binary_name(true));
    Flags::from_arg_matches(&cmd.try_get_matches_from(args).unwrap()).unwrap()
}

#[test]
fn flags_win_over_the_environment_and_the_file() {
    let dir = std::env::temp_dir();
    let dir = dir.display().to_string();
    let env: BTreeMap<&str, &str> = [
        ("BEAMLINE_NATS_URLS", "tls://env:4222"),
        ("BEAMLINE_DECIDE_ACK_WAIT_MS", "9000"),
        ("BEAMLINE_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .collect();
    let get = |k: &str| env.get(k).map(|v| v.to_string());
    let given = flags(&[
        "--nats-url",
        "tls://a:4222, tls://b:4222",
        "--ack-wait-secs",
        "7",
        "--policies",
        &dir,
        "--admin-token",
        "0123456789abcdef",
        "--metrics-listen=",
        "--max-deliver",
        "4",
    ]);
    let s = Settings::parse_with_flags(
        "[decide]\nack_wait_ms = 1000\nmax_deliver = 3\n[metrics]\nlisten = \"127.0.0.1:1\"\n",
        get,
        &given,
    )
    .unwrap();
    s.validate().unwrap();
    assert_eq!(s.nats.urls, vec!["tls://a:4222", "tls://b:4222"]);
    assert_eq!(s.decide.ack_wait_ms, 7_000, "--ack-wait-secs is in seconds");
    assert_eq!(s.decide.max_deliver, 4);
    assert_eq!(s.router.policies_dir.as_deref(), Some(Path::new(&dir)));
    assert_eq!(s.router.admin_token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(
        s.metrics.listen, "",
        "an empty flag value disables the endpoint"
    );
    assert_eq!(s.log.format, "json", "no flag given: the environment wins");

    // No flag given and none filled from its variable: nothing changes.
    if KEYS
        .iter()
        .filter_map(|k| k.flag?.env)
        .all(|v| std::env::var_os(v).is_none())
    {
        let none = Settings::parse_with_flags("", no_env, &flags(&[])).unwrap();
        assert_eq!(none, Settings::default());
    }
    // A bad flag value is refused by its key's rule, as the file's would be.
    let e = Settings::parse_with_flags(
        "",
        no_env,
        &flags(&["--max-deliver", "1", "--policies", &dir]),
    )
    .unwrap()
    .validate()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: `decide.max_deliver` = 1: must be at least 2"
    );
}

#[test]
fn the_required_policies_dir_names_its_flag() {
    let e = Settings::parse("", no_env).unwrap().validate().unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.rule.as_str()),
        ("router.policies_dir", "is required (or pass --policies)")
    );
}

#[test]
fn worker_threads_default_to_one_and_are_bounded() {
    assert_eq!(settings("").unwrap().router.worker_threads, 1);
    let per_core = settings("worker_threads = 0\n").unwrap();
    assert_eq!(per_core.router.worker_threads, 0);
    let e = refusal("worker_threads = 257\n");
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("router.worker_threads", "257")
    );
}

#[test]
fn messages_name_key_value_and_rule() {
    let e = refusal("[decide]\nmax_deliver = 1\n");
    assert_eq!(e.key, "decide.max_deliver");
    assert_eq!(e.value, "1");
    assert_eq!(e.rule, "must be at least 2");
    assert_eq!(
        e.to_string(),
        "invalid configuration: `decide.max_deliver` = 1: must be at least 2"
    );

    let e = refusal("[nats]\nurls = [\"http://x:4222\"]\n");
    assert_eq!(e.key, "nats.urls");
    assert!(e.value.contains("http://x:4222"), "{e}");
    assert!(e.rule.contains("nats://"), "{e}");

    let e = refusal("[nats]\nurls = []\n");
    assert_eq!(
        (e.key.as_str(), e.rule.as_str()),
        ("nats.urls", "must list at least one server")
    );

    let e = refusal("[nats]\npublish_timeout_ms = \"fast\"\n");
    assert_eq!(e.key, "nats.publish_timeout_ms");
    assert_eq!(e.rule, "must be a non-negative integer");

    let e = refusal("[nats]\nusr = \"a\"\n");
    assert_eq!(e.key, "nats.usr");
    assert!(e.rule.starts_with("unknown key"), "{e}");

    let e = refusal("[nats]\nuser = \"a\"\n");
    assert_eq!(e.key, "nats.password");

    let e = refusal("[nats]\ntoken = \"t\"\ncreds_file = \"/etc/hostname\"\n");
    assert_eq!(e.rule, "set at most one authentication method");

    let e = refusal("[tls]\nca_file = \"/does/not/exist.pem\"\n");
    assert_eq!(e.key, "tls.ca_file");
    assert_eq!(e.value, "/does/not/exist.pem");
    assert_eq!(e.rule, "must name an existing file");

    let e = refusal("[subjects]\ndecide = \"beamline.>\"\n");
    assert_eq!(e.key, "subjects.decide");
    assert!(e.rule.contains("no wildcards"), "{e}");

    let e = refusal("[subjects]\nresult = \"beamline.router.v1.decide\"\n");
    assert_eq!(e.key, "subjects.result");
    assert_eq!(e.rule, "must differ from subjects.decide");

    let e = refusal("[state]\nbackend = \"redis\"\n");
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("state.backend", "\"redis\"")
    );
    let e = refusal("[state]\nbackend = \"kv\"\nkv_timeout_ms = 20000\n");
    assert_eq!(e.key, "state.kv_timeout_ms");
    assert!(e.rule.contains("half of decide.ack_wait_ms"), "{e}");
    let e = refusal("[state]\nkv_replicas = 7\n");
    assert_eq!(e.key, "state.kv_replicas");
    let e = refusal("[streams]\nreplicas = 6\n");
    assert_eq!(e.key, "streams.replicas");
    let e = refusal("pull_heartbeat_ms = 50\n");
    assert_eq!(e.key, "router.pull_heartbeat_ms");

    let e = refusal("[streams]\nusage = \"USAGE.X\"\n");
    assert_eq!(e.key, "streams.usage");

    let e = refusal("[results]\nmax_deliver = 2\nbackoff_ms = [1000, 2000, 3000]\n");
    assert_eq!(e.key, "results.backoff_ms");
    assert_eq!(e.rule, "must have at most max_deliver (2) entries");

    let e = refusal("[assignment]\ndeadline_min_ms = 500\ndeadline_max_ms = 100\n");
    assert_eq!(e.key, "assignment.deadline_max_ms");
    assert_eq!(e.rule, "must be at least assignment.deadline_min_ms (500)");

    let e = refusal("[metrics]\nlisten = \"localhost\"\n");
    assert_eq!(e.key, "metrics.listen");

    let e = refusal("[log]\nformat = \"xml\"\n");
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("log.format", "\"xml\"")
    );

    let e = refusal("admin_token = \"short\"\n");
    assert_eq!(e.key, "router.admin_token");
    assert_eq!(e.value, "(hidden)", "secrets are never echoed");

    let e = Settings::parse("[router]\n", no_env)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.key, "router.policies_dir");

    let e = Settings::parse("[nats\n", no_env).unwrap_err();
    assert_eq!(e.key, "$file");
    assert!(e.rule.contains("TOML"), "{e}");
}

#[test]
fn a_bad_extension_registry_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.json");
    std::fs::write(&path, r#"[{"id":""}]"#).unwrap();
    let e = refusal(&format!(
        "extensions_file = {:?}\n",
        path.display().to_string()
    ));
    assert_eq!(e.key, "router.extensions_file");
    assert!(e.rule.starts_with("field "), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let env: BTreeMap<&str, &str> = [
        ("BEAMLINE_NATS_URLS", "tls://a:4222, tls://b:4222"),
        ("BEAMLINE_DECIDE_MAX_DELIVER", "7"),
        ("BEAMLINE_ACKS_ENABLED", "true"),
        ("BEAMLINE_RESULTS_BACKOFF_MS", "1000,5000"),
        ("BEAMLINE_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .collect();
    let get = |k: &str| env.get(k).map(|v| v.to_string());
    let s = Settings::parse(
        "[decide]\nmax_deliver = 3\n[log]\nformat = \"pretty\"\n",
        get,
    )
    .unwrap();
    assert_eq!(s.nats.urls, vec!["tls://a:4222", "tls://b:4222"]);
    assert_eq!(s.decide.max_deliver, 7);
    assert!(s.acks.enabled);
    assert_eq!(s.results.backoff_ms, vec![1000, 5000]);
    assert_eq!(s.log.format, "json");

    let bad = |k: &str| (k == "BEAMLINE_DECIDE_MAX_DELIVER").then(|| "many".to_string());
    let e = Settings::parse("", bad).unwrap_err();
    assert_eq!(e.key, "BEAMLINE_DECIDE_MAX_DELIVER");
    assert_eq!(e.value, "\"many\"");
    assert_eq!(e.rule, "must be a non-negative integer");
}

#[test]
fn websocket_urls_are_refused_with_the_reason() {
    for url in ["ws://127.0.0.1:8080", "wss://nats.example:443"] {
        let e = refusal(&format!("[nats]\nurls = [{url:?}]\n"));
        assert_eq!(e.key, "nats.urls");
        assert!(e.rule.contains("not supported by this build"), "{e}");
    }
    assert!(settings("[nats]\nurls = [\"tls://a:4222\", \"nats://b:4222\"]\n").is_ok());
}
