//! The coverage-probe catalogue (`core::probes::PROBES`) and the code agree: every name
//! the core or the host passes to `probe("...")` is listed, and every listed name is
//! reported somewhere. (Names chosen by a `match` are caught at run time instead: the
//! simulator's sweep reports reached names the catalogue lacks, and `--require-probes`
//! fails on them.)

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use beamline_router::core::probes::PROBES;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("probes.rs") {
            let text = fs::read_to_string(&path).expect("source file");
            out.push((path.display().to_string(), text));
        }
    }
}

fn code() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&root.join("core"), &mut out);
    sources(&root.join("host"), &mut out);
    out
}

#[test]
fn every_probe_called_is_in_the_catalogue_and_every_entry_is_called() {
    let listed: BTreeSet<&str> = PROBES.iter().map(|p| p.name).collect();
    assert_eq!(listed.len(), PROBES.len(), "a probe is listed twice");
    let files = code();
    let mut called = BTreeSet::new();
    for (path, text) in &files {
        for (i, _) in text.match_indices("probe(\"") {
            let rest = &text[i + "probe(\"".len()..];
            let name = &rest[..rest.find('"').expect("closing quote")];
            assert!(
                listed.contains(name),
                "{path}: probe {name:?} is not in core::probes::PROBES"
            );
            called.insert(name.to_string());
        }
    }
    for p in PROBES {
        let quoted = format!("\"{}\"", p.name);
        assert!(
            files.iter().any(|(_, text)| text.contains(&quoted)),
            "probe {} is listed but no code reports it",
            p.name
        );
        assert!(
            !p.what.is_empty(),
            "probe {} says nothing of itself",
            p.name
        );
    }
    assert!(
        called.len() >= 30,
        "only {} direct probe calls",
        called.len()
    );
}
