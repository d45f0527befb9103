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

/// Declares a program's set of maps once. `$view` borrows each map (from
/// the skeleton with `of_skeleton`, or from the pins through `$pinned`,
/// which owns them opened from an attachment directory), `$view::PINNED`
/// names them in declaration order, and `$view::pin` pins them all from
/// the skeleton. A map is known by its name in the object, which is also
/// its skeleton field and its pin name; `field = map` gives it a shorter
/// name in code. `missing:` names a function that explains, as context, why
/// an attachment's pins lack the set.
macro_rules! map_set {
    (
        $(#[$meta:meta])*
        $view:ident, $pinned:ident, $skel:ident {
            $($field:ident $(= $map:ident)?),+ $(,)?
        }
        $(missing: $missing:path)?
    ) => {
        $(#[$meta])*
        pub struct $view<'a> {
            $($field: &'a dyn libbpf_rs::MapCore,)+
        }

        impl<'a> $view<'a> {
            pub const PINNED: &'static [&'static str] =
                &[$($crate::programs::maps::map_name!($field $($map)?)),+];

            pub fn of_skeleton(skel: &'a $skel<'_>) -> Self {
                $view {
                    $($field: &$crate::programs::maps::skeleton_map!(skel.maps, $field $($map)?),)+
                }
            }

            /// Pins every map of the set from a loaded skeleton into `dir`.
            pub fn pin(
                skel: &$skel<'_>,
                dir: &$crate::kernel::pins::AttachmentDir,
            ) -> anyhow::Result<()> {
                use std::os::fd::AsFd;
                $(
                    $crate::kernel::bpfobj::pin(
                        $crate::programs::maps::skeleton_map!(skel.maps, $field $($map)?).as_fd(),
                        &dir.map($crate::programs::maps::map_name!($field $($map)?)),
                    )?;
                )+
                Ok(())
            }
        }

        /// The maps of the set, opened from an attachment's pins.
        pub struct $pinned {
            $($field: libbpf_rs::MapHandle,)+
        }

        impl $pinned {
            pub fn open(dir: &$crate::kernel::pins::AttachmentDir) -> anyhow::Result<Self> {
                let open = || -> anyhow::Result<Self> {
                    Ok($pinned {
                        $($field: $crate::programs::maps::open_pinned_map(
                            dir,
                            $crate::programs::maps::map_name!($field $($map)?),
                        )?,)+
                    })
                };
                let opened = open();
                $(let opened = opened.map_err(|err| err.context($missing(dir)));)?
                opened
            }

            pub fn maps(&self) -> $view<'_> {
                $view {
                    $($field: &self.$field,)+
                }
            }
        }
    };
}
pub(crate) use map_set;

/// A map's name in the object: the one given, else the field's.
macro_rules! map_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $map:ident) => {
        stringify!($map)
    };
}
pub(crate) use map_name;

/// A map of the skeleton, by its name in the object.
macro_rules! skeleton_map {
    ($maps:expr, $field:ident) => {
        $maps.$field
    };
    ($maps:expr, $field:ident $map:ident) => {
        $maps.$map
    };
}
pub(crate) use skeleton_map;
