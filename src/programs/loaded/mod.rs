//! Objects loaded from other people's `.bpf.o` files (`meshbpf load`):
//! validated, opened and loaded with libbpf, pinned under
//! `<root>/loaded/NAME/`, attached by section type, and unloaded.
//!
//! Layout:
//! - `loaded/NAME/prog_<program>`: every program;
//! - `loaded/NAME/map_<map>`: every map, with `--pin-maps` (dots as `%2E`);
//! - `loaded/NAME/meta`: a frozen one-entry array map holding what the
//!   kernel does not keep: the file, each program's ELF section (which says
//!   how it attaches) and the globals set at load;
//! - `loaded/NAME/link_<program>`: an attachment to a tracepoint, raw
//!   tracepoint, BTF hook, cgroup or kprobe;
//! - `net/<iface>/NAME:<program>/{prog,link}`: an attachment to an
//!   interface, beside meshbpf's own, so that `detach IFACE` removes it too.
//!
//! Invariant: an object is loaded exactly when `loaded/NAME` exists; a
//! directory with a ':' in `loaded/` is what a killed command left, named
//! by `health`, and swept by the next load or unload and by `health --fix`.
//!
//! `load`, one commit point: the rename of `loaded/NAME:loading` to
//! `loaded/NAME`, after every program and the meta map are pinned there.
//! Killed before it, programs are pinned (none attached) in the staging
//! directory: `health` names an interrupted load; `--fix` and the next load
//! or unload remove it (the old state).
//!
//! `unload`, one commit point: the rename of `loaded/NAME` to
//! `loaded/NAME:unloading`, first. Then the object's interface attachments
//! are removed, its links detached, and its pins go. Killed after the
//! rename, programs may still run: `health` names an interrupted unload
//! with them; `unload NAME`, the next load and `--fix` finish it (the new
//! state).

pub mod attach;
pub mod globals;
pub mod section;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, ObjectBuilder, OpenObject};
use serde::{Deserialize, Serialize};

use crate::error::{errno_of, Failure};
use crate::kernel::elf;
use crate::kernel::pins::{encode_component, AttachmentDir, StateRoot};
use crate::kernel::{bpfobj, btf, ffi, files, verifier};
use section::Hook;

const LOADED_DIR: &str = "loaded";
const META_PIN: &str = "meta";
const PROG_PREFIX: &str = "prog_";
const MAP_PREFIX: &str = "map_";
const LINK_PREFIX: &str = "link_";
/// Joins object and program in interface attachment directories, and marks
/// transient directories in `loaded/`: it is never part of a NAME.
pub const SEPARATOR: char = ':';
const STAGING_SUFFIX: &str = ":loading";
const UNLOADING_SUFFIX: &str = ":unloading";
const NAME_MAX: usize = 64;

/// What the kernel does not remember about an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub file: String,
    pub programs: Vec<ProgramMeta>,
    #[serde(default)]
    pub globals: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramMeta {
    pub name: String,
    pub section: String,
}

/// A loaded object's pin directory.
#[derive(Debug, Clone)]
pub struct LoadedDir {
    pub name: String,
    pub path: PathBuf,
}

impl LoadedDir {
    pub fn new(root: &StateRoot, name: &str) -> Self {
        LoadedDir {
            name: name.to_string(),
            path: root.path().join(LOADED_DIR).join(name),
        }
    }

    pub fn prog(&self, program: &str) -> PathBuf {
        self.path.join(format!("{PROG_PREFIX}{program}"))
    }

    fn map(&self, map: &str) -> PathBuf {
        self.path
            .join(format!("{MAP_PREFIX}{}", encode_component(map)))
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.path.join(format!("{LINK_PREFIX}{program}"))
    }

    fn meta_pin(&self) -> PathBuf {
        self.path.join(META_PIN)
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn meta(&self) -> Result<Meta> {
        let pin = self.meta_pin();
        let map = MapHandle::from_pinned_path(&pin)
            .with_context(|| format!("opening {}", pin.display()))?;
        let bytes = map
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("reading {}", pin.display()))?
            .unwrap_or_default();
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} does not describe an object", pin.display()))
    }

    /// Every pin in the directory except the meta map, by path.
    pub fn pins(&self) -> Result<Vec<PathBuf>> {
        let mut pins: Vec<PathBuf> = fs::read_dir(&self.path)
            .with_context(|| format!("listing {}", self.path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("listing {}", self.path.display()))?;
        pins.retain(|p| p.file_name().is_some_and(|n| n != META_PIN));
        pins.sort();
        Ok(pins)
    }

    /// The interface attachments of this object's programs, committed or
    /// left over.
    pub fn interface_attachments(&self, root: &StateRoot) -> Result<Vec<AttachmentDir>> {
        let prefix = format!("{}{SEPARATOR}", self.name);
        Ok(root
            .all_program_dirs()?
            .into_iter()
            .filter(|d| d.program.starts_with(&prefix))
            .collect())
    }

    /// The directory name of an attachment of `program` to an interface.
    pub fn attachment_name(&self, program: &str) -> String {
        format!("{}{SEPARATOR}{program}", self.name)
    }
}

/// Whether an interface attachment belongs to a loaded object.
pub fn is_loaded_attachment(dir: &AttachmentDir) -> bool {
    dir.program.contains(SEPARATOR)
}

/// Every loaded object, sorted by name.
pub fn all(root: &StateRoot) -> Result<Vec<LoadedDir>> {
    let mut found: Vec<LoadedDir> = crate::kernel::pins::subdirs(&root.path().join(LOADED_DIR))?
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.contains(SEPARATOR))
        .map(|n| LoadedDir::new(root, &n))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A NAME must be usable as a pin name and on a command line.
pub fn check_name(name: &str) -> Result<(), Failure> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok(());
    }
    Err(
        Failure::new(format!("'{name}' is not a valid object name")).hint(format!(
            "names are 1 to {NAME_MAX} letters, digits, '_' or '-'"
        )),
    )
}

/// The default NAME: the file name without `.o` and `.bpf`, with every
/// character a name cannot hold replaced by '_'.
pub fn default_name(file: &Path) -> String {
    let full = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = full.strip_suffix(".o").unwrap_or(&full);
    let stem = stem.strip_suffix(".bpf").unwrap_or(stem);
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_MAX)
        .collect();
    if name.is_empty() {
        "object".into()
    } else {
        name
    }
}

pub struct LoadRequest<'a> {
    pub file: &'a Path,
    pub name: &'a str,
    pub pin_maps: bool,
    pub globals: &'a [globals::Assignment],
    pub log: Option<&'a Path>,
    pub btf: Option<&'a Path>,
}

/// Reads and validates the file; nothing touches the kernel yet.
pub fn read_object(file: &Path) -> Result<Vec<u8>> {
    let bytes = files::read(file, &files::BPF_OBJECT).map_err(|err| err.into_failure(file))?;
    elf::validate(&bytes).map_err(|f| {
        anyhow::Error::new(f).context(format!("{} is not loadable", file.display()))
    })?;
    Ok(bytes)
}

/// Loads the object and pins it at `loaded/NAME`, all or nothing. Run under
/// the exclusive lock, after checking that NAME is free.
pub fn load(root: &StateRoot, request: &LoadRequest<'_>, bytes: &[u8]) -> Result<LoadedDir> {
    let what = request.file.display().to_string();
    let mut builder = ObjectBuilder::default();
    builder.name(request.name)?;
    // Held until the object is loaded: libbpf reads the BTF then.
    let custom_btf = request.btf.map(btf::CustomBtf::open).transpose()?;
    if let Some(custom) = &custom_btf {
        builder.btf_custom_path(custom.path())?;
    }
    let mut open = verifier::load(&what, || builder.open_memory(bytes))?;
    let programs: Vec<ProgramMeta> = open
        .progs()
        .map(|p| ProgramMeta {
            name: p.name().to_string_lossy().into_owned(),
            section: p.section().to_string_lossy().into_owned(),
        })
        .collect();
    let globals = globals::apply(&mut open, request.globals)?;
    let object = load_open(&what, open, request.log, &programs)?;

    let meta = Meta {
        file: fs::canonicalize(request.file)
            .unwrap_or_else(|_| request.file.to_path_buf())
            .display()
            .to_string(),
        programs,
        globals,
    };
    let staging = LoadedDir {
        name: request.name.to_string(),
        path: root
            .path()
            .join(LOADED_DIR)
            .join(format!("{}{STAGING_SUFFIX}", request.name)),
    };
    let pinned = pin_all(&staging, &object, &meta, request.pin_maps).and_then(|()| {
        let dir = LoadedDir::new(root, request.name);
        fs::rename(&staging.path, &dir.path).with_context(|| {
            format!(
                "renaming {} to {}",
                staging.path.display(),
                dir.path.display()
            )
        })?;
        Ok(dir)
    });
    if pinned.is_err() && staging.path.exists() {
        remove(&staging.path)?;
    }
    pinned
}

/// Loads every program; a trampoline program this kernel refuses is named
/// as such.
fn load_open(
    what: &str,
    open: OpenObject,
    log: Option<&Path>,
    programs: &[ProgramMeta],
) -> Result<libbpf_rs::Object> {
    verifier::load_logged(what, log, || open.load()).map_err(|err| {
        if errno_of(&err) != Some(libc::EPERM) {
            return err;
        }
        let failed = err
            .downcast_ref::<verifier::FailedProgram>()
            .map(|f| f.0.clone());
        let trampoline = programs.iter().find(|p| {
            Some(&p.name) == failed.as_ref()
                && matches!(Hook::of(&p.section), Hook::BtfTyped { trampoline: true, .. })
        });
        match trampoline {
            // The capabilities were checked and the verifier printed
            // nothing: the refusal is of the program type, not the code.
            Some(p) => anyhow::Error::new(io::Error::from_raw_os_error(libc::EPERM)).context(
                Failure::new(format!(
                    "the kernel refused to load program '{}' ({}) of {what}: BPF_PROG_LOAD failed with EPERM before the verifier ran, although the capabilities are present; this kernel refuses BPF trampoline programs (fentry, fexit, fmod_ret, freplace, lsm)",
                    p.name, p.section
                ))
                .hint("use a tracepoint, raw_tp or tp_btf program for this hook here, or load the object on a kernel that allows trampolines"),
            ),
            None => err,
        }
    })
}

fn pin_all(dir: &LoadedDir, object: &libbpf_rs::Object, meta: &Meta, pin_maps: bool) -> Result<()> {
    fs::create_dir_all(&dir.path).with_context(|| format!("creating {}", dir.path.display()))?;
    for prog in object.progs() {
        bpfobj::pin(prog.as_fd(), &dir.prog(&prog.name().to_string_lossy()))?;
    }
    if pin_maps {
        for map in object.maps() {
            bpfobj::pin(map.as_fd(), &dir.map(&map.name().to_string_lossy()))?;
        }
    }
    pin_meta(dir, meta)
}

/// Keeps `meta` in a frozen array map pinned in the object's directory.
fn pin_meta(dir: &LoadedDir, meta: &Meta) -> Result<()> {
    let bytes = serde_json::to_vec(meta)?;
    let map = MapHandle::create(
        MapType::Array,
        Some("meshbpf_meta"),
        4,
        bytes.len() as u32,
        1,
        &ffi::opts(),
    )
    .context("creating the object's meta map")?;
    map.update(&0u32.to_ne_bytes(), &bytes, MapFlags::ANY)
        .context("writing the object's meta map")?;
    map.freeze().context("freezing the object's meta map")?;
    bpfobj::pin(map.as_fd(), &dir.meta_pin())
}

/// Detaches the links pinned in a directory, removes every pin, then the
/// directory.
fn remove(path: &Path) -> Result<()> {
    for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let pin = entry?.path();
        let is_link = pin
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(LINK_PREFIX));
        if is_link {
            let link = bpfobj::open_pinned(&pin)?;
            match bpfobj::detach_link(link.as_fd()) {
                // Raw tracepoint and perf event links cannot be detached
                // early: they go with their last reference, the pin below.
                Err(err) if errno_of(&err) == Some(libc::EOPNOTSUPP) => {}
                other => other?,
            }
        }
        fs::remove_file(&pin).with_context(|| format!("removing pin {}", pin.display()))?;
    }
    fs::remove_dir(path).with_context(|| format!("removing {}", path.display()))
}

/// A directory in `loaded/` that a killed load or unload left.
#[derive(Debug, Clone)]
pub struct Transient {
    /// The object's directory, under its transient name.
    pub dir: LoadedDir,
    pub interrupted: Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    Load,
    Unload,
}

impl Transient {
    /// Removes it; an unload's interface attachments go first, as the
    /// unload would have removed them.
    pub fn remove(&self, root: &StateRoot) -> Result<()> {
        if self.interrupted == Interrupted::Unload {
            for attachment in self.dir.interface_attachments(root)? {
                attachment.remove()?;
            }
        }
        remove(&self.dir.path)
    }

    /// "interrupted unload of NAME at DIR: 2 programs and 1 link pinned,
    /// program raw_getppid running".
    pub fn describe(&self, root: &StateRoot) -> Result<String> {
        let what = match self.interrupted {
            Interrupted::Load => "load",
            Interrupted::Unload => "unload",
        };
        let mut programs = 0;
        let mut running = Vec::new();
        for pin in self.dir.pins()? {
            let name = pin.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(PROG_PREFIX) {
                programs += 1;
            } else if name.starts_with(LINK_PREFIX) {
                running.push(linked_program(&pin)?);
            }
        }
        if self.interrupted == Interrupted::Unload {
            for attachment in self.dir.interface_attachments(root)? {
                if attachment.link().exists() {
                    running.push(format!(
                        "{} on {}",
                        linked_program(&attachment.link())?,
                        attachment.interface
                    ));
                }
            }
        }
        let runs = match running.as_slice() {
            [] => "nothing runs".to_string(),
            [one] => format!("program {one} running"),
            many => format!("programs {} running", many.join(", ")),
        };
        Ok(format!(
            "interrupted {what} of {} at {}: {programs} programs and {} links pinned, {runs}",
            self.dir.name,
            self.dir.path.display(),
            running.len()
        ))
    }
}

/// The name of the program a pinned link runs.
fn linked_program(pin: &Path) -> Result<String> {
    let link = bpfobj::open_pinned(pin)?;
    let info =
        bpfobj::link_info(link.as_fd()).with_context(|| format!("inspecting {}", pin.display()))?;
    Ok(bpfobj::prog_info_by_id(info.prog_id)?.name)
}

/// Every directory a killed load or unload left in `loaded/`.
pub fn transients(root: &StateRoot) -> Result<Vec<Transient>> {
    let mut found = Vec::new();
    for path in crate::kernel::pins::subdirs(&root.path().join(LOADED_DIR))? {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (name, interrupted) = if let Some(name) = file_name.strip_suffix(STAGING_SUFFIX) {
            (name, Interrupted::Load)
        } else if let Some(name) = file_name.strip_suffix(UNLOADING_SUFFIX) {
            (name, Interrupted::Unload)
        } else {
            continue;
        };
        found.push(Transient {
            dir: LoadedDir {
                name: name.to_string(),
                path: path.clone(),
            },
            interrupted,
        });
    }
    found.sort_by(|a, b| a.dir.path.cmp(&b.dir.path));
    Ok(found)
}

/// The unload of `name` a killed command left, if there is one.
pub fn interrupted_unload(root: &StateRoot, name: &str) -> Option<Transient> {
    let path = root
        .path()
        .join(LOADED_DIR)
        .join(format!("{name}{UNLOADING_SUFFIX}"));
    path.is_dir().then(|| Transient {
        dir: LoadedDir {
            name: name.to_string(),
            path,
        },
        interrupted: Interrupted::Unload,
    })
}

/// Removes what killed commands left in `loaded/`. Run under the exclusive
/// lock, when no other command can be midway.
pub fn sweep(root: &StateRoot) -> Result<()> {
    for transient in transients(root)? {
        log::info!(
            "removing {}, left by an interrupted command",
            transient.dir.path.display()
        );
        transient.remove(root)?;
    }
    Ok(())
}

/// Unloads the object: out of sight in one rename first (the commit), then
/// its interface attachments, links and pins go.
pub fn unload(root: &StateRoot, dir: &LoadedDir) -> Result<()> {
    let leaving = Transient {
        dir: LoadedDir {
            name: dir.name.clone(),
            path: dir
                .path
                .with_file_name(format!("{}{UNLOADING_SUFFIX}", dir.name)),
        },
        interrupted: Interrupted::Unload,
    };
    fs::rename(&dir.path, &leaving.dir.path).with_context(|| {
        format!(
            "renaming {} to {}",
            dir.path.display(),
            leaving.dir.path.display()
        )
    })?;
    leaving.remove(root)?;
    let parent = root.path().join(LOADED_DIR);
    // Other objects may still be loaded.
    let _ = fs::remove_dir(parent);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_the_file_name() {
        assert_eq!(default_name(Path::new("/tmp/counter.bpf.o")), "counter");
        assert_eq!(default_name(Path::new("x.o")), "x");
        assert_eq!(default_name(Path::new("my prog.v2.o")), "my_prog_v2");
        assert_eq!(default_name(Path::new("/tmp/.o")), "object");
        assert!(check_name(&default_name(Path::new("a.b.c.bpf.o"))).is_ok());
    }

    #[test]
    fn names_are_checked() {
        for good in ["counter", "a", "x_y-z9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a:b", "a/b", "a b", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_layout_keeps_dots_and_separators_out_of_names() {
        let root = StateRoot::new(PathBuf::from("/sys/fs/bpf/meshbpf"));
        let dir = LoadedDir::new(&root, "counter");
        assert_eq!(
            dir.prog("xdp_count"),
            Path::new("/sys/fs/bpf/meshbpf/loaded/counter/prog_xdp_count")
        );
        assert_eq!(
            dir.map("counter.rodata"),
            Path::new("/sys/fs/bpf/meshbpf/loaded/counter/map_counter%2Erodata")
        );
        assert_eq!(dir.attachment_name("xdp_count"), "counter:xdp_count");
    }
}
