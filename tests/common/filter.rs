//! xdp_mesh_filter through the real binary: a rules file, attaching it, and
//! reading back the rules with their hit counters.

use std::path::PathBuf;

use serde_json::Value;

use super::VethPair;

/// A rules file in a temporary directory that lives as long as the value.
pub struct RulesFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn rules_file(rules: &Value) -> RulesFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.json");
    std::fs::write(&path, rules.to_string()).unwrap();
    RulesFile { _dir: dir, path }
}

/// `meshbpf attach DEV --filter RULES -j`, which must succeed.
pub fn attach_filter(net: &VethPair, rules: &Value) -> Value {
    let file = rules_file(rules);
    net.meshbpf(&[
        "attach",
        &net.dev,
        "--filter",
        file.path.to_str().unwrap(),
        "-j",
    ])
    .ok()
    .json()
}

/// `meshbpf filter show DEV -j`.
pub fn show(net: &VethPair) -> Value {
    net.meshbpf(&["filter", "show", &net.dev, "-j"]).ok().json()
}

/// The packets rule `rule` matched, from [`show`]'s output.
pub fn hits(shown: &Value, rule: usize) -> u64 {
    shown["rules"][rule]["packets"].as_u64().unwrap()
}
