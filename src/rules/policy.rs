//! STUB on branch lsm-base only: the policy helper replaces this file. The
//! signatures are the seam between the policy parser and the runtime.

use std::path::Path;

use super::RuleError;

pub struct Policy {}

pub fn load(path: &Path) -> Result<Policy, RuleError> {
    unimplemented!("policy parser: {}", path.display())
}

impl Policy {
    pub fn compile(&self) -> anyhow::Result<CompiledPolicy> {
        unimplemented!("policy compiler")
    }

    pub fn check_lockout(&self, _enforce: bool) -> anyhow::Result<()> {
        unimplemented!("lock-out check")
    }
}

pub struct CompiledPolicy {
    pub flags: u32,
    pub paths: Vec<PathEntry>,
    pub uids: Vec<u32>,
    pub comms: Vec<[u8; 16]>,
    pub cgroups: Vec<u64>,
}

pub struct PathEntry {
    pub key: Vec<u8>,
    pub flags: u32,
}
