//! Loading policies from a directory laid out as `<tenant>/<policy_id>.json`. This is
//! the one place the policy module does I/O; shells call it at start, the core never.

use std::path::{Path, PathBuf};

use super::{parse_policy, PolicyError, PolicyStore};

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read policy directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: PolicyError },
    #[error("{path}: tenant and policy ids must be 1-255 characters of [A-Za-z0-9_.-]")]
    BadName { path: PathBuf },
}

/// Read every `<dir>/<tenant>/<policy_id>.json`. Entries are visited in sorted order so
/// that the first error reported is the same on every machine.
pub fn load_dir(dir: &Path) -> Result<PolicyStore, PolicyLoadError> {
    let mut store = PolicyStore::new();
    for tenant_dir in sorted_entries(dir)? {
        if !tenant_dir.is_dir() {
            continue;
        }
        let tenant = file_name(&tenant_dir)?;
        for file in sorted_entries(&tenant_dir)? {
            if file.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let policy_id = file
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| valid_id(s))
                .ok_or_else(|| PolicyLoadError::BadName { path: file.clone() })?
                .to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| PolicyLoadError::Io {
                path: file.clone(),
                source,
            })?;
            let policy =
                parse_policy(&policy_id, &text).map_err(|source| PolicyLoadError::Invalid {
                    path: file.clone(),
                    source,
                })?;
            store.insert(&tenant, policy);
        }
    }
    Ok(store)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, PolicyLoadError> {
    let io = |source| PolicyLoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> Result<String, PolicyLoadError> {
    path.file_name()
        .and_then(|s| s.to_str())
        .filter(|s| valid_id(s))
        .map(str::to_string)
        .ok_or_else(|| PolicyLoadError::BadName {
            path: path.to_path_buf(),
        })
}

/// Upstream's rule for tenant and policy ids (`^[a-zA-Z0-9_.-]+$`, 1-255 characters).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_tenant_dirs_and_reports_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("acme")).unwrap();
        std::fs::write(
            dir.path().join("acme/default.json"),
            r#"{"providers":[{"name":"openai","weight":100}]}"#,
        )
        .unwrap();
        let store = load_dir(dir.path()).unwrap();
        assert!(store.get("acme", "default").is_some());
        assert!(store.get("acme", "other").is_none());

        std::fs::write(dir.path().join("acme/broken.json"), "{").unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("broken.json"), "{err}");
    }
}
