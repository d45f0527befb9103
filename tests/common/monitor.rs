//! lsm_monitor attached for a test, in its own pin root, with a policy
//! about a fresh directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{PinRoot, BIN};

/// lsm_monitor attached in its own pin root, watching a fresh directory.
pub struct Monitor {
    pub root: PinRoot,
    pub watched: tempfile::TempDir,
}

impl Monitor {
    pub fn attach() -> Monitor {
        Monitor::with_policy(|dir| serde_json::json!({ "watch": [dir] }))
    }

    /// Attached with the policy `policy` makes for the fresh directory.
    pub fn with_policy(policy: impl FnOnce(&Path) -> Value) -> Monitor {
        let root = PinRoot::new();
        let watched = tempfile::tempdir().expect("tempdir");
        let text = policy(watched.path()).to_string();
        let policy = watched.path().with_extension("policy.json");
        std::fs::write(&policy, text).expect("writing the policy");
        let attached = root
            .meshbpf(&[
                "attach",
                "--lsm",
                "--policy",
                policy.to_str().unwrap(),
                "-j",
            ])
            .ok()
            .json();
        std::fs::remove_file(&policy).expect("removing the policy");
        assert_eq!(attached["method"], "tracepoint", "{attached}");
        assert_eq!(attached["mode"], "audit", "{attached}");
        Monitor { root, watched }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.watched.path().join(name)
    }

    /// `events -j ARGS`: the event lines and the summary line.
    pub fn events(&self, args: &[&str]) -> (Vec<Value>, Value) {
        self.root.events(args)
    }

    /// `meshbpf events ARGS` running in the background on this root.
    pub fn spawn_events(&self, args: &[&str]) -> Child {
        Command::new(BIN)
            .args(self.root.args(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning meshbpf events")
    }
}
