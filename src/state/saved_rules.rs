//! The last rule set each interface's filter settled on, on disk, for the
//! boot unit (`deploy/systemd/meshbpf-filter@.service`) to apply before the
//! network comes up: pins are meshbpf's state, but they die with the
//! machine, and a host must not boot unfiltered.
//!
//! The invariant: `<state dir>/filter/IFACE.json` is a whole rule file (the
//! set as meshbpf parsed it, so it applies as it did) that was in force and
//! settled: applied without `--confirm`, or confirmed. A set waiting for
//! its confirmation is staged beside it as `IFACE.pending.json` and only a
//! confirm renames it into place, so a rollback, by the timer or by hand,
//! leaves the file of the set it restores. Every write is a new file
//! renamed over the old one, so a kill leaves the old file or the new one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::rules::filter::FilterRules;

/// Where the boot unit looks unless told otherwise (its StateDirectory).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/meshbpf";

pub struct SavedRules {
    dir: PathBuf,
}

impl SavedRules {
    pub fn new(state_dir: &Path) -> Self {
        SavedRules {
            dir: state_dir.join("filter"),
        }
    }

    /// The settled rule set of `interface`, which the boot unit applies.
    pub fn path(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("{interface}.json"))
    }

    fn pending(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("{interface}.pending.json"))
    }

    /// Records `rules` as the settled set of `interface`.
    pub fn store(&self, interface: &str, rules: &FilterRules) -> Result<PathBuf> {
        let path = self.path(interface);
        self.write(&path, rules)?;
        self.discard(interface)?;
        Ok(path)
    }

    /// [`Self::store`] for a command whose change already stands: a
    /// failure to save becomes a warning, since failing the command would
    /// tell a script the rule set is not in force.
    pub fn record(
        &self,
        interface: &str,
        rules: &FilterRules,
        warnings: &mut Vec<String>,
    ) -> Option<PathBuf> {
        self.store(interface, rules)
            .map_err(|err| warnings.push(not_saved(&err)))
            .ok()
    }

    /// Keeps `rules` aside until [`Self::promote`] settles them.
    pub fn stage(&self, interface: &str, rules: &FilterRules) -> Result<PathBuf> {
        let path = self.pending(interface);
        self.write(&path, rules)?;
        Ok(path)
    }

    /// Makes the staged set the settled one; None when nothing was staged.
    pub fn promote(&self, interface: &str) -> Result<Option<PathBuf>> {
        let (from, to) = (self.pending(interface), self.path(interface));
        match fs::rename(&from, &to) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(Some(to))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("renaming {} to {}", from.display(), to.display()))
            }
        }
    }

    /// Drops the staged set, if any.
    pub fn discard(&self, interface: &str) -> Result<()> {
        remove(&self.pending(interface))
    }

    /// Forgets `interface`: its filter is gone, so the boot unit has
    /// nothing to apply.
    pub fn forget(&self, interface: &str) -> Result<()> {
        remove(&self.path(interface))?;
        self.discard(interface)
    }

    fn write(&self, path: &Path, rules: &FilterRules) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("creating a file in {}", self.dir.display()))?;
        let text = serde_json::to_string_pretty(&rules.to_file())?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.as_file().sync_all()?;
        file.persist(path)
            .with_context(|| format!("writing {}", path.display()))?;
        sync_dir(&self.dir)
    }
}

/// The warning of a rule set in force that the boot unit will not apply.
pub fn not_saved(err: &anyhow::Error) -> String {
    format!(
        "the rule set is in force but not saved for boot: {err:#}; check --state-dir (MESHBPF_STATE_DIR) is writable"
    )
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// A rename is durable once its directory is.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::filter::parse;

    #[test]
    fn stage_then_promote_settles_and_a_store_drops_the_staged_set() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedRules::new(dir.path());
        let first = parse(r#"{"rules": [{"id": "a", "action": "allow", "dport": 22}]}"#).unwrap();
        let second = parse(r#"{"default": "deny", "rules": [{"action": "deny"}]}"#).unwrap();
        let path = saved.store("eth0", &first).unwrap();
        let back = parse(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, first);
        saved.stage("eth0", &second).unwrap();
        assert_eq!(parse(&fs::read_to_string(&path).unwrap()).unwrap(), first);
        assert_eq!(saved.promote("eth0").unwrap(), Some(path.clone()));
        assert_eq!(parse(&fs::read_to_string(&path).unwrap()).unwrap(), second);
        assert_eq!(saved.promote("eth0").unwrap(), None);
        saved.stage("eth0", &first).unwrap();
        saved.store("eth0", &second).unwrap();
        assert_eq!(
            saved.promote("eth0").unwrap(),
            None,
            "a store drops what was staged"
        );
        saved.forget("eth0").unwrap();
        assert!(!path.exists());
        saved.forget("eth0").unwrap();
    }
}
