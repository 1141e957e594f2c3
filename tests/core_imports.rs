//! `src/core` has no import circles: no module uses one that (directly or through others)
//! uses it back. Read from the source, as `use super::<module>` and `super::<module>::`
//! paths; test-only files (`*_tests.rs`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("src/core") {
        let path = entry.expect("dir entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "rs") || name.ends_with("_tests") || name == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        // Code after `#[cfg(test)]` belongs to the module's tests.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut uses = BTreeSet::new();
        for (i, _) in text.match_indices("super::") {
            let rest = &text[i + "super::".len()..];
            let module: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !module.is_empty() && module != name {
                uses.insert(module);
            }
        }
        graph.insert(name, uses);
    }
    graph
}

/// A cycle through `from`, if any: the path back to it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn core_modules_import_no_circles() {
    let graph = imports();
    assert!(graph.contains_key("router") && graph.contains_key("flow_decide"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import circles in src/core:\n{}",
        cycles.join("\n")
    );
}
