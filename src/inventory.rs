//! Everything meshbpf manages, described from its pins and the kernel:
//! meshbpf's own attachments and the objects loaded with `meshbpf load`,
//! each with its programs, their attachments, and the maps they use.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::Result;
use libbpf_rs::{MapCore, MapHandle, MapInfo, MapType};
use serde::Serialize;

use crate::kernel::bpfobj::{self, ObjKind};
use crate::kernel::links::LinkState;
use crate::kernel::links::{self, Hooked};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::runstats::RunStats;
use crate::kernel::{clock, netdev, tc};
use crate::output;
use crate::programs::loaded::{self, LoadedDir};
use crate::programs::{self, Scope};
use crate::proto::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// One of meshbpf's own programs on an interface (`meshbpf attach`).
    Attachment,
    /// One of meshbpf's host-wide programs (`attach --latency`, `--lsm`).
    Host,
    /// An object from `meshbpf load`.
    Loaded,
}

#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub kind: ObjectKind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The object file it was loaded from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Globals set at load with --set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub globals: BTreeMap<String, serde_json::Value>,
    pub pin_path: String,
    pub programs: Vec<Program>,
    pub maps: Vec<Map>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Program {
    pub name: String,
    /// The ELF section, for loaded objects: it says how the program attaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    pub prog_type: String,
    pub prog_id: u32,
    /// RFC 3339, from the kernel's load time.
    pub loaded_at: String,
    pub pin_path: String,
    pub attachments: Vec<Attachment>,
    /// The kernel's totals since load; they grow only while run-time
    /// statistics are on (`stats --sample`, or kernel.bpf_stats_enabled).
    #[serde(flatten)]
    pub runtime: RunStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// None for netlink clsact filters, which are not links.
    pub link_id: Option<u32>,
    pub attach_point: String,
    pub method: String,
    pub state: LinkState,
    pub pin_path: String,
}

impl Attachment {
    pub fn new(hooked: Hooked, pin: &Path) -> Self {
        Attachment {
            link_id: Some(hooked.link_id),
            attach_point: hooked.attach_point,
            method: hooked.method,
            state: hooked.state,
            pin_path: pin.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Map {
    pub name: String,
    pub map_type: String,
    pub map_id: u32,
    /// Keys present; for arrays every slot, so max_entries. None where
    /// entries are not keyed values (ring buffers, queues...).
    pub entries: Option<u64>,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Where it is pinned, if it is.
    pub pin_path: Option<String>,
}

/// Every managed object: own attachments by interface, the host-wide ones,
/// then loaded objects by name. Run under the shared lock.
pub fn all(root: &StateRoot) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for dir in root.attachments()? {
        if !loaded::is_loaded_attachment(&dir) {
            objects.push(own_attachment(&dir)?);
        }
    }
    for program in programs::ALL.iter().filter(|p| p.scope == Scope::Host) {
        let dir = root.host_attachment(program.name);
        if dir.is_committed() {
            objects.push(own_attachment(&dir)?);
        }
    }
    for dir in loaded::all(root)? {
        objects.push(loaded_object(root, &dir)?);
    }
    Ok(objects)
}

fn own_attachment(dir: &AttachmentDir) -> Result<Object> {
    let pins = pins_in(&dir.path)?;
    let mut inventory = Inventory::default();
    for pin in &pins {
        if *pin != dir.clsact() {
            inventory.add(pin, None)?;
        }
    }
    if dir.clsact().exists() {
        inventory.add_clsact(dir)?;
    }
    let (programs, maps) = inventory.finish()?;
    let host = dir.interface.is_empty();
    Ok(Object {
        kind: if host {
            ObjectKind::Host
        } else {
            ObjectKind::Attachment
        },
        name: dir.program.clone(),
        interface: (!host).then(|| dir.interface.clone()),
        file: None,
        globals: BTreeMap::new(),
        pin_path: dir.path.display().to_string(),
        programs,
        maps,
    })
}

/// A loaded object, with its interface attachments.
pub fn loaded_object(root: &StateRoot, dir: &LoadedDir) -> Result<Object> {
    let meta = dir.meta()?;
    let mut inventory = Inventory::default();
    for pin in dir.pins()? {
        let section = meta
            .programs
            .iter()
            .find(|p| dir.prog(&p.name) == pin)
            .map(|p| (p.name.clone(), p.section.clone()));
        inventory.add(&pin, section)?;
    }
    for attachment in dir.interface_attachments(root)? {
        if attachment.is_committed() {
            inventory.add(&attachment.link(), None)?;
        }
    }
    let (programs, maps) = inventory.finish()?;
    Ok(Object {
        kind: ObjectKind::Loaded,
        name: dir.name.clone(),
        interface: None,
        file: Some(meta.file),
        globals: meta.globals,
        pin_path: dir.path.display().to_string(),
        programs,
        maps,
    })
}

fn pins_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pins: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    pins.sort();
    Ok(pins)
}

/// Programs, links and map pins gathered from a set of pins.
#[derive(Default)]
struct Inventory {
    programs: Vec<Program>,
    /// Links by the id of the program they run; joined in `finish`, as
    /// link pins may come before their program's.
    links: Vec<(u32, Attachment)>,
    map_pins: BTreeMap<u32, String>,
    map_ids: Vec<u32>,
}

impl Inventory {
    /// Adds what a pin holds. `program` names a program pin (with its
    /// section) when the kernel's 15-character name would not do.
    fn add(&mut self, pin: &Path, program: Option<(String, String)>) -> Result<()> {
        let fd = bpfobj::open_pinned(pin)?;
        match bpfobj::kind_of(fd.as_fd()) {
            ObjKind::Prog => self.add_program(fd.as_fd(), pin, program),
            ObjKind::Link => {
                let hooked = links::describe(fd.as_fd())?;
                self.links
                    .push((hooked.prog_id, Attachment::new(hooked, pin)));
                Ok(())
            }
            ObjKind::Map => {
                let id = MapInfo::new(fd.as_fd())?.info.id;
                self.map_pins.insert(id, pin.display().to_string());
                self.map_ids.push(id);
                Ok(())
            }
            ObjKind::Other => Ok(()),
        }
    }

    fn add_program(
        &mut self,
        fd: BorrowedFd<'_>,
        pin: &Path,
        program: Option<(String, String)>,
    ) -> Result<()> {
        let info = bpfobj::prog_info(fd)?;
        if self.programs.iter().any(|p| p.prog_id == info.id) {
            return Ok(());
        }
        self.map_ids.extend(bpfobj::prog_map_ids(fd)?);
        let runtime = RunStats::from_info(&info);
        let (name, section) = match program {
            Some((name, section)) => (name, Some(section)),
            None => (info.name, None),
        };
        self.programs.push(Program {
            name,
            section,
            prog_type: links::prog_type_name(info.prog_type),
            prog_id: info.id,
            loaded_at: clock::rfc3339(clock::boottime_to_wall(info.load_time_ns)),
            pin_path: pin.display().to_string(),
            attachments: Vec::new(),
            runtime,
        });
        Ok(())
    }

    /// Netlink clsact filters have no links: ask tc which of the programs
    /// run on the interface's ingress and egress.
    fn add_clsact(&mut self, dir: &AttachmentDir) -> Result<()> {
        let Ok(iface) = netdev::resolve(&dir.interface) else {
            return Ok(());
        };
        for program in &mut self.programs {
            let fd = bpfobj::open_pinned(Path::new(&program.pin_path))?;
            for direction in Direction::BOTH {
                if tc::netlink_prog_id(fd.as_fd(), &iface, direction)
                    .ok()
                    .flatten()
                    == Some(program.prog_id)
                {
                    program.attachments.push(Attachment {
                        link_id: None,
                        attach_point: format!(
                            "{} {}",
                            iface.name,
                            format!("{direction:?}").to_lowercase()
                        ),
                        method: "clsact".into(),
                        state: LinkState::Attached,
                        pin_path: dir.clsact().display().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The programs with their links, and the maps.
    fn finish(mut self) -> Result<(Vec<Program>, Vec<Map>)> {
        for (prog_id, link) in std::mem::take(&mut self.links) {
            if let Some(p) = self.programs.iter_mut().find(|p| p.prog_id == prog_id) {
                p.attachments.push(link);
            }
        }
        let maps = self.maps()?;
        Ok((self.programs, maps))
    }

    /// The maps of every program and every map pin, once each, by id.
    fn maps(&self) -> Result<Vec<Map>> {
        let mut ids = self.map_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        let mut maps = Vec::new();
        for id in ids {
            // A map freed since its program was read is simply gone.
            let Ok(map) = MapHandle::from_map_id(id) else {
                continue;
            };
            maps.push(Map {
                name: map.name().to_string_lossy().into_owned(),
                map_type: links::map_type_name(map.map_type().into()),
                map_id: id,
                entries: entries(&map),
                max_entries: map.max_entries(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                pin_path: self.map_pins.get(&id).cloned(),
            });
        }
        Ok(maps)
    }
}

/// How many entries a map holds: every slot of an array, the keys of a
/// hash or trie (walked with BPF_MAP_GET_NEXT_KEY, at most max_entries).
fn entries(map: &MapHandle) -> Option<u64> {
    match map.map_type() {
        MapType::Array | MapType::PercpuArray => Some(map.max_entries().into()),
        t if t.is_hash_map() || t == MapType::LpmTrie => {
            Some(map.keys().take(map.max_entries() as usize).count() as u64)
        }
        _ => None,
    }
}

impl Object {
    /// An object's title, its programs with their attachments, and its maps.
    pub fn render(&self) -> String {
        let title = match self.kind {
            ObjectKind::Attachment => format!(
                "{} on {} · {}",
                self.name,
                self.interface.as_deref().unwrap_or("?"),
                self.pin_path
            ),
            ObjectKind::Host => format!("{} (host-wide) · {}", self.name, self.pin_path),
            ObjectKind::Loaded => format!(
                "loaded object {} · {} · from {}",
                self.name,
                self.pin_path,
                self.file.as_deref().unwrap_or("?")
            ),
        };
        let globals: String = self
            .globals
            .iter()
            .map(|(name, value)| format!("\nset {name} = {value}"))
            .collect();
        let mut programs = output::table(&[
            "program",
            "section",
            "type",
            "prog id",
            "attached to",
            "method",
            "state",
            "link id",
        ]);
        for p in &self.programs {
            let section = p.section.as_deref().unwrap_or("-");
            let id = output::right(p.prog_id);
            if p.attachments.is_empty() {
                programs.add_row(vec![
                    p.name.as_str().into(),
                    section.into(),
                    p.prog_type.as_str().into(),
                    id.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for a in &p.attachments {
                programs.add_row(vec![
                    p.name.as_str().into(),
                    section.into(),
                    p.prog_type.as_str().into(),
                    id.clone(),
                    a.attach_point.as_str().into(),
                    a.method.as_str().into(),
                    format!("{:?}", a.state).to_lowercase().into(),
                    output::right(a.link_id.map_or("-".into(), |l| l.to_string())),
                ]);
            }
        }
        let mut text = format!("{title}{globals}\n{programs}");
        if !self.maps.is_empty() {
            let mut maps = output::table(&[
                "map",
                "type",
                "map id",
                "entries",
                "max entries",
                "pinned at",
            ]);
            for m in &self.maps {
                maps.add_row(vec![
                    m.name.as_str().into(),
                    m.map_type.as_str().into(),
                    output::right(m.map_id),
                    output::right(m.entries.map_or("-".into(), output::count)),
                    output::right(output::count(m.max_entries.into())),
                    m.pin_path.as_deref().unwrap_or("-").into(),
                ]);
            }
            text.push_str(&format!("\n{maps}"));
        }
        text
    }
}
