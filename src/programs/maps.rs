//! Reading and writing map entries as the skeleton's generated types
//! (`plain`), for every program of meshbpf: by key, per CPU, and by pin.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::kernel::pins::AttachmentDir;
pub use crate::kernel::pod::bytes;

/// The value of `key`, as `T`; None when the map has no such key.
pub fn lookup<T: plain::Plain + Default>(map: &dyn MapCore, key: &[u8]) -> Result<Option<T>> {
    let Some(raw) = map.lookup(key, MapFlags::ANY)? else {
        return Ok(None);
    };
    let mut value = T::default();
    plain::copy_from_bytes(&mut value, &raw)
        .map_err(|e| anyhow::anyhow!("unexpected value size: {e:?}"))?;
    Ok(Some(value))
}

/// Reads slot 0 of a per-CPU array on every CPU, as `T`.
pub fn read_per_cpu<T: plain::Plain + Default>(map: &dyn MapCore, key: u32) -> Result<Vec<T>> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading map {}", map.name().to_string_lossy()))?
        .unwrap_or_default();
    per_cpu
        .iter()
        .map(|bytes| {
            let mut value = T::default();
            plain::copy_from_bytes(&mut value, bytes)
                .map_err(|e| anyhow::anyhow!("map value has an unexpected size: {e:?}"))?;
            Ok(value)
        })
        .collect()
}

pub fn open_pinned_map(dir: &AttachmentDir, name: &str) -> Result<MapHandle> {
    let path = dir.map(name);
    MapHandle::from_pinned_path(&path).with_context(|| format!("opening {}", path.display()))
}
