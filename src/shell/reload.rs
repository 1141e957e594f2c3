//! Policy reload: on SIGHUP the driver reads the policy directory and, when the
//! deployment names one, the extension registry, and hands the result to the host
//! (`Host::reload`), which puts the set in force whole or keeps the running one. A set
//! with one file that does not load is refused whole; the error names the file, and
//! the policy's field and rule.

use std::path::PathBuf;

use crate::host::Reload;
use crate::policy;

use super::config::Settings;

/// Where the running policy set came from, to read it again.
pub struct PolicySource {
    dir: PathBuf,
    settings: Settings,
}

impl PolicySource {
    pub fn new(dir: PathBuf, settings: &Settings) -> Self {
        PolicySource {
            dir,
            settings: settings.clone(),
        }
    }

    /// Read the whole set again. The directory is small and local: read on the driver's
    /// turn, between two events, rather than on a blocking thread.
    pub fn load(&self) -> Result<Reload, String> {
        let policies = policy::load_dir(&self.dir).map_err(|e| e.to_string())?;
        let extensions = match &self.settings.router.extensions_file {
            Some(_) => Some(
                self.settings
                    .extension_registry()
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok(Reload {
            policies,
            extensions,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// SIGHUP, installed now (a hang-up before the driver's first turn is not lost); none
/// when it cannot be listened for (logged).
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGHUP: policies reload only on restart");
            None
        }
    }
}
