//! tc_classifier: a flow table per 5-tuple and direction, with an L7 guess,
//! kept by two SCHED_CLS programs on TC ingress and egress.
//!
//! The layout is include/flow_table.h; Rust reads map bytes into the
//! skeleton's generated types. Reading the table is one batched walk of the
//! LRU hash (`BPF_MAP_LOOKUP_BATCH` until ENOENT), with a key-by-key walk for
//! kernels that have no batch operations on it.

use std::collections::HashSet;
use std::mem::{self, MaybeUninit};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramAttachType};

use crate::error::Failure;
use crate::kernel::btf::OpenOpts;
use crate::kernel::maps::Entries;
use crate::kernel::netdev::Interface;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::kernel::tc::{self, TcMethod};
use crate::kernel::{bpfobj, verifier};
use crate::programs::maps;
use crate::programs::{Facets, Scope};
use crate::proto::{Direction, L7};
use crate::rules::classes::ClassRules;
use flows::Flow;

pub mod classes;
pub mod flows;
pub mod health;
pub mod metrics;
pub mod skel;

pub use skel::types::{
    flow_direction, flow_key, flow_limits, flow_table_stats, flow_value, l7_proto,
};
pub use skel::TcClassifierSkel;

// The kernel hashes a flow_key by its bytes, so every one of them is a named
// field (layouts_have_no_implicit_padding).
plain_data!(flow_key, flow_value, flow_table_stats);

pub const PROGRAM: &str = "tc_classifier";

pub const FACETS: Facets = Facets {
    name: PROGRAM,
    scope: Scope::Interface,
    metrics: metrics::families,
    health: Some(health::checks),
    stats: None,
};

/// Map and program pin names in the attachment directory (link pins are the
/// attach logic's).
pub const FLOWS_MAP: &str = "flows";
pub const STATS_MAP: &str = "flow_stats";
pub const PROG_INGRESS_PIN: &str = "prog_ingress";
pub const PROG_EGRESS_PIN: &str = "prog_egress";

/// The default and the ceiling of `--max-flows`, from the shared header.
pub const DEFAULT_MAX_FLOWS: u32 = flow_limits::FLOW_DEFAULT_MAX.0;
pub const MAX_FLOWS: u32 = flow_limits::FLOW_MAX_ENTRIES.0;

/// Entries per `BPF_MAP_LOOKUP_BATCH` call; grown when a hash bucket holds
/// more than a batch (ENOSPC).
const BATCH: usize = 8192;
/// The kernel's ENOTSUPP (524), which it returns for map types without batch
/// operations; not the same number as userspace's ENOTSUP.
const ENOTSUPP: i32 = 524;

/// Opens and loads both programs, unattached, with a flow table of
/// `max_flows` entries. With `tcx`, the programs' expected attach types are
/// TCX_INGRESS/TCX_EGRESS, which tcx links require; without, they are left
/// unset for netlink clsact filters.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
    max_flows: u32,
    tcx: bool,
) -> Result<TcClassifierSkel<'obj>> {
    check_max_flows(max_flows)?;
    let opts = OpenOpts::new(btf)?;
    verifier::load(PROGRAM, || {
        let mut open =
            skel::TcClassifierSkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        open.maps.flows.set_max_entries(max_flows)?;
        if tcx {
            open.progs
                .tc_ingress
                .set_attach_type(ProgramAttachType::TcxIngress);
            open.progs
                .tc_egress
                .set_attach_type(ProgramAttachType::TcxEgress);
        }
        open.load()
    })
}

pub fn check_max_flows(max_flows: u32) -> Result<()> {
    if max_flows == 0 || max_flows > MAX_FLOWS {
        bail!(Failure::new(format!(
            "--max-flows {max_flows} is out of range: the flow table holds 1 to {MAX_FLOWS} flows"
        ))
        .hint(format!(
            "the default is {DEFAULT_MAX_FLOWS}; each flow takes about 150 bytes of kernel memory"
        )));
    }
    Ok(())
}

/// Pins both programs and both maps into `dir`, which stays uncommitted
/// until a link pin joins them.
pub fn pin(skel: &TcClassifierSkel<'_>, dir: &AttachmentDir) -> Result<()> {
    dir.create()?;
    bpfobj::pin(skel.maps.flows.as_fd(), &dir.map(FLOWS_MAP))?;
    bpfobj::pin(skel.maps.flow_stats.as_fd(), &dir.map(STATS_MAP))?;
    classes::ClassMaps::pin(skel, dir)?;
    bpfobj::pin(skel.progs.tc_ingress.as_fd(), &dir.map(PROG_INGRESS_PIN))?;
    bpfobj::pin(skel.progs.tc_egress.as_fd(), &dir.map(PROG_EGRESS_PIN))
}

/// The bytes the kernel hashes a key by.
pub fn key_bytes(key: &flow_key) -> &[u8] {
    maps::bytes(key)
}

fn map_name(map: &dyn MapCore) -> String {
    map.name().to_string_lossy().into_owned()
}

/// The map must be a flow table of this build's layout: reading another
/// layout into these types would be garbage, not an error.
fn check_layout(map: &dyn MapCore) -> Result<()> {
    let (key, value) = (map.key_size() as usize, map.value_size() as usize);
    if key != mem::size_of::<flow_key>() || value != mem::size_of::<flow_value>() {
        bail!(Failure::new(format!(
            "map {} is not a flow table of this meshbpf: key/value size {key}/{value}, expected {}/{}",
            map_name(map),
            mem::size_of::<flow_key>(),
            mem::size_of::<flow_value>()
        ))
        .hint("the attachment was made by another meshbpf version: detach and attach again"));
    }
    Ok(())
}

/// Every flow in the table, in the kernel's bucket order (see
/// [`visit_flows`]).
pub fn read_flows(map: &dyn MapCore) -> Result<Vec<(flow_key, flow_value)>> {
    let mut flows = Vec::with_capacity(map.max_entries() as usize);
    visit_flows(map, &mut |key, value| flows.push((*key, *value)))?;
    Ok(flows)
}

/// Hands every flow in the table to `visit`, in the kernel's bucket order,
/// and returns how many there were. One `BPF_MAP_LOOKUP_BATCH` call per
/// batch, looped until ENOENT (libbpf-rs' `lookup_batch` stops early on hash
/// maps); falls back to a key-by-key walk where the kernel has no batch
/// lookups for the map. Nothing but one batch is held: a reader that keeps
/// a few flows of a million never holds the million.
///
/// The table keeps changing while it is read: a flow created or evicted
/// meanwhile may or may not be visited, but none is visited twice.
pub fn visit_flows(
    map: &dyn MapCore,
    visit: &mut dyn FnMut(&flow_key, &flow_value),
) -> Result<usize> {
    check_layout(map)?;
    let entries = Entries::<flow_key, flow_value>::of(map.as_fd())?;
    let mut visited = 0;
    // Batch buffers stay small and hot.
    let mut batch = BATCH;
    let mut keys = vec![flow_key::default(); batch];
    let mut values = vec![flow_value::default(); batch];
    let mut cursor = entries.cursor();

    loop {
        match entries.lookup_batch(&mut cursor, &mut keys, &mut values) {
            Ok(read) => {
                for (key, value) in keys[..read.count].iter().zip(&values[..read.count]) {
                    visit(key, value);
                }
                visited += read.count;
                if read.last {
                    return Ok(visited);
                }
            }
            Err(e) => match e.raw_os_error().unwrap_or(0) {
                // One hash bucket holds more than a batch: nothing was read.
                libc::ENOSPC if batch <= map.max_entries() as usize => {
                    batch *= 2;
                    keys.resize(batch, flow_key::default());
                    values.resize(batch, flow_value::default());
                }
                libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP if !cursor.started() => {
                    log::debug!(
                        "batch lookup of map {} unsupported ({e}), reading key by key",
                        map_name(map)
                    );
                    return visit_flows_by_key(map, visit);
                }
                _ => {
                    return Err(e)
                        .with_context(|| format!("reading map {} in batches", map_name(map)))
                }
            },
        }
    }
}

/// Every flow in the table (see [`visit_flows_by_key`]).
pub fn read_flows_by_key(map: &dyn MapCore) -> Result<Vec<(flow_key, flow_value)>> {
    let mut flows = Vec::new();
    visit_flows_by_key(map, &mut |key, value| flows.push((*key, *value)))?;
    Ok(flows)
}

/// Hands every flow in the table to `visit`, one `BPF_MAP_GET_NEXT_KEY` and
/// one lookup per flow: several times slower than [`visit_flows`], for
/// kernels without batch lookups. When the key it stands on is evicted, the kernel restarts the
/// walk from the first bucket; flows seen twice are kept once, and the walk
/// ends after as many steps as the table could hold twice over.
pub fn visit_flows_by_key(
    map: &dyn MapCore,
    visit: &mut dyn FnMut(&flow_key, &flow_value),
) -> Result<usize> {
    check_layout(map)?;
    let entries = Entries::<flow_key, flow_value>::of(map.as_fd())?;
    let capacity = map.max_entries() as usize;
    let mut seen: HashSet<[u8; mem::size_of::<flow_key>()]> = HashSet::with_capacity(capacity);
    let mut key = None;

    for _ in 0..capacity.saturating_mul(2).max(1) {
        let Some(next) = entries
            .next_key(key.as_ref())
            .with_context(|| format!("walking the keys of map {}", map_name(map)))?
        else {
            break;
        };
        key = Some(next);
        let Some(value) = entries
            .lookup(&next)
            .with_context(|| format!("reading map {}", map_name(map)))?
        else {
            // Evicted between the two calls.
            continue;
        };
        let mut raw = [0u8; mem::size_of::<flow_key>()];
        raw.copy_from_slice(key_bytes(&next));
        if seen.insert(raw) {
            visit(&next, &value);
        }
    }
    Ok(seen.len())
}

/// One entry of the table as [`crate::flows`] works with it.
pub fn decode(key: &flow_key, value: &flow_value) -> Flow {
    Flow {
        src: flows::address(key.family, key.src),
        dst: flows::address(key.family, key.dst),
        sport: key.sport,
        dport: key.dport,
        protocol: key.protocol,
        // The programs write FLOW_INGRESS or FLOW_EGRESS only.
        direction: Direction::from_raw(key.direction).unwrap_or(Direction::Ingress),
        packets: value.packets,
        bytes: value.bytes,
        first_seen_ns: value.first_seen_ns,
        last_seen_ns: value.last_seen_ns,
        // The flags byte lives in the low 8 bits of a 64-bit word.
        tcp_flags: value.tcp_flags as u8,
        l7: L7::from_raw(value.l7),
    }
}

/// The flow table's totals, summed over CPUs, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlowStats {
    pub ingress: flow_table_stats,
    pub egress: flow_table_stats,
}

impl FlowStats {
    /// Both directions added up.
    pub fn total(&self) -> flow_table_stats {
        let mut sum = self.ingress;
        add_stats(&mut sum, &self.egress);
        sum
    }
}

fn add_stats(sum: &mut flow_table_stats, more: &flow_table_stats) {
    sum.flows_created += more.flows_created;
    sum.packets += more.packets;
    sum.bytes += more.bytes;
    sum.not_ip += more.not_ip;
    sum.insert_failed += more.insert_failed;
    sum.pulled += more.pulled;
}

/// Sums the per-CPU `flow_stats` slots of each direction.
pub fn read_stats(map: &dyn MapCore) -> Result<FlowStats> {
    let mut stats = FlowStats::default();
    for (direction, slot) in [
        (flow_direction::FLOW_INGRESS, &mut stats.ingress),
        (flow_direction::FLOW_EGRESS, &mut stats.egress),
    ] {
        for cpu in maps::read_per_cpu::<flow_table_stats>(map, direction.0)? {
            add_stats(slot, &cpu);
        }
    }
    Ok(stats)
}

/// Hands every flow of a pinned attachment to `visit` (see [`visit_flows`]).
pub fn visit_pinned_flows(
    dir: &AttachmentDir,
    visit: &mut dyn FnMut(&flow_key, &flow_value),
) -> Result<usize> {
    visit_flows(&maps::open_pinned_map(dir, FLOWS_MAP)?, visit)
}

/// The totals of a pinned attachment.
pub fn read_pinned_stats(dir: &AttachmentDir) -> Result<FlowStats> {
    read_stats(&maps::open_pinned_map(dir, STATS_MAP)?)
}

/// One flow by its key.
pub fn lookup_flow(map: &dyn MapCore, key: &flow_key) -> Result<Option<flow_value>> {
    check_layout(map)?;
    let Some(bytes) = map
        .lookup(key_bytes(key), MapFlags::ANY)
        .with_context(|| format!("reading map {}", map_name(map)))?
    else {
        return Ok(None);
    };
    let mut value = flow_value::default();
    plain::copy_from_bytes(&mut value, &bytes)
        .map_err(|e| anyhow::anyhow!("flow value has an unexpected size: {e:?}"))?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Keys are hashed as bytes: every byte must be a named field.
        assert_eq!(mem::size_of::<flow_key>(), 16 + 16 + 2 + 2 + 4);
        assert_eq!(mem::size_of::<flow_value>(), 5 * 8 + 8);
        assert_eq!(mem::size_of::<flow_table_stats>(), 6 * 8);
    }

    #[test]
    fn limits_come_from_the_header() {
        assert_eq!(DEFAULT_MAX_FLOWS, 65536);
        assert_eq!(MAX_FLOWS, 4194304);
        assert!(check_max_flows(0).is_err());
        assert!(check_max_flows(1).is_ok());
        assert!(check_max_flows(MAX_FLOWS).is_ok());
        assert!(check_max_flows(MAX_FLOWS + 1).is_err());
    }

    #[test]
    fn enums_match_the_header() {
        assert_eq!(flow_direction::FLOW_INGRESS.0, 0);
        assert_eq!(flow_direction::FLOW_EGRESS.0, 1);
        assert_eq!(l7_proto::L7_MAX.0, 6);
    }

    #[test]
    fn decode_reads_every_field() {
        let mut key = flow_key {
            sport: 40000,
            dport: 443,
            family: 4,
            protocol: 6,
            direction: flow_direction::FLOW_EGRESS.0 as u8,
            ..Default::default()
        };
        key.src[..4].copy_from_slice(&[192, 0, 2, 1]);
        key.dst[..4].copy_from_slice(&[198, 51, 100, 7]);
        let value = flow_value {
            packets: 3,
            bytes: 180,
            first_seen_ns: 10,
            last_seen_ns: 20,
            tcp_flags: 0x13,
            l7: l7_proto::L7_TLS.0 as u8,
            ..Default::default()
        };
        let flow = decode(&key, &value);
        assert_eq!(flow.src, "192.0.2.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            flow.dst,
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!((flow.sport, flow.dport, flow.protocol), (40000, 443, 6));
        assert_eq!(flow.direction, Direction::Egress);
        assert_eq!((flow.packets, flow.bytes), (3, 180));
        assert_eq!((flow.first_seen_ns, flow.last_seen_ns), (10, 20));
        assert_eq!(flow.tcp_flags, 0x13);
        assert_eq!(flow.l7, L7::Tls);

        let mut key6 = key;
        key6.family = 6;
        key6.src = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode(&key6, &value).src, std::net::Ipv6Addr::LOCALHOST);
    }

    #[test]
    fn l7_names_follow_the_enum() {
        for (raw, l7) in [
            (l7_proto::L7_UNKNOWN, L7::Unknown),
            (l7_proto::L7_HTTP1, L7::Http1),
            (l7_proto::L7_TLS, L7::Tls),
            (l7_proto::L7_HTTP2, L7::Http2),
            (l7_proto::L7_DNS, L7::Dns),
            (l7_proto::L7_SSH, L7::Ssh),
        ] {
            assert_eq!(L7::from_raw(raw.0 as u8), l7);
        }
        assert_eq!(L7::ALL.len(), l7_proto::L7_MAX.0 as usize);
    }

    #[test]
    fn totals_add_both_directions() {
        let mut stats = FlowStats::default();
        stats.ingress.packets = 3;
        stats.ingress.flows_created = 1;
        stats.egress.packets = 4;
        stats.egress.not_ip = 2;
        let total = stats.total();
        assert_eq!(total.packets, 7);
        assert_eq!(total.flows_created, 1);
        assert_eq!(total.not_ip, 2);
    }
}

/// The egress link's pin; the ingress link is the attachment's `link` pin,
/// which goes last and commits (tcx). With netlink, the `clsact` records
/// are pinned before the first filter is added, and the filters themselves,
/// asked of the kernel, say whether the attachment is whole
/// ([`missing_hooks`]).
const LINK_EGRESS_PIN: &str = "link_egress";

/// Loads both programs, hooks them to ingress and egress, and pins. On
/// failure `dir` may hold pins and recorded filters: the caller removes it.
///
/// With no `method`, tcx is tried first and netlink clsact taken when the
/// kernel refuses the ingress link: the refusal is the probe, so no test
/// program is attached and released first (each tcx change waits for an
/// RCU grace period). Netlink then loads the programs again, without the
/// tcx attach types.
pub fn attach(
    dir: &AttachmentDir,
    iface: &Interface,
    method: Option<TcMethod>,
    max_flows: u32,
    btf: Option<&Path>,
    class_rules: Option<&ClassRules>,
) -> Result<()> {
    if method != Some(TcMethod::Netlink) {
        let mut object = MaybeUninit::uninit();
        let skel = load_classified(&mut object, btf, max_flows, true, class_rules)?;
        // Links die with their fds until pinned: a failure here leaves nothing.
        match tc::attach_tcx(skel.progs.tc_ingress.as_fd(), iface, Direction::Ingress) {
            Ok(ingress_link) => {
                let egress_link =
                    tc::attach_tcx(skel.progs.tc_egress.as_fd(), iface, Direction::Egress)?;
                pin(&skel, dir)?;
                bpfobj::pin(egress_link.as_fd(), &dir.pin(LINK_EGRESS_PIN))?;
                return bpfobj::pin(ingress_link.as_fd(), &dir.link());
            }
            Err(err) if method.is_none() => log::info!(
                "{err:#}: the kernel refuses tcx there, so tc_classifier attaches as clsact filters"
            ),
            Err(err) => {
                log::info!("{err:#}");
                return Err(tc::tcx_refused(iface).into());
            }
        }
    }
    let mut object = MaybeUninit::uninit();
    let skel = load_classified(&mut object, btf, max_flows, false, class_rules)?;
    let (ingress, egress) = (skel.progs.tc_ingress.as_fd(), skel.progs.tc_egress.as_fd());
    // Filters outlive the process: recorded first, so that whatever is
    // added can be found and removed again.
    pin(&skel, dir)?;
    bpfobj::pin(ingress, &dir.clsact())?;
    bpfobj::pin(egress, &dir.clsact_egress())?;
    tc::attach_netlink(ingress, iface, Direction::Ingress)?;
    tc::attach_netlink(egress, iface, Direction::Egress)
}

/// [`load`], with the QoS classes set before any hook: the first packets
/// are classified too.
fn load_classified<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
    max_flows: u32,
    tcx: bool,
    class_rules: Option<&ClassRules>,
) -> Result<TcClassifierSkel<'obj>> {
    let skel = load(object, btf, max_flows, tcx)?;
    if let Some(rules) = class_rules {
        classes::apply(&classes::ClassMaps::of_skeleton(&skel), rules)?;
    }
    Ok(skel)
}

/// Why the attachment in `dir` does not run on both hooks of `iface` as its
/// pins say (the kernel's own view: tcx link info, the clsact filters);
/// None when it does.
pub fn missing_hooks(dir: &AttachmentDir, iface: &Interface) -> Result<Option<String>> {
    let hooks = [
        (Direction::Ingress, PROG_INGRESS_PIN, dir.link()),
        (Direction::Egress, PROG_EGRESS_PIN, dir.pin(LINK_EGRESS_PIN)),
    ];
    for (direction, prog_pin, link_pin) in hooks {
        let hook = direction.as_str();
        if dir.clsact().exists() {
            let prog = bpfobj::open_pinned(&dir.pin(prog_pin))?;
            let ours = bpfobj::prog_info(prog.as_fd())?.id;
            match tc::netlink_prog_id(prog.as_fd(), iface, direction)? {
                Some(id) if id == ours => {}
                Some(id) => {
                    return Ok(Some(format!(
                        "its clsact {hook} filter runs program {id}, not tc_classifier's {ours}"
                    )))
                }
                None => return Ok(Some(format!("its clsact {hook} filter is gone"))),
            }
        } else if !link_pin.exists() {
            return Ok(Some(format!("no tcx {hook} link is pinned")));
        } else {
            let link = bpfobj::open_pinned(&link_pin)?;
            if bpfobj::link_info(link.as_fd())?.ifindex != iface.index {
                return Ok(Some(format!("its tcx {hook} link no longer runs")));
            }
        }
    }
    Ok(None)
}

/// What `stats` and `attach` say about a flow table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowTable {
    pub program: &'static str,
    pub method: TcMethod,
    pub max_flows: u32,
    /// Flows in the table now.
    pub flows: usize,
    pub flows_created: u64,
    /// Flows the LRU pushed out to make room: created minus present.
    pub evictions: u64,
    /// Packets that were not IP, for which no flow exists.
    pub not_ip: u64,
    /// QoS classes in use (`attach --classes`), with `unclassified` first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<classes::ClassUse>,
}

pub fn inspect(dir: &AttachmentDir) -> Result<FlowTable> {
    let map = maps::open_pinned_map(dir, FLOWS_MAP)?;
    let flows = visit_flows(&map, &mut |_, _| {})?;
    let totals = read_pinned_stats(dir)?.total();
    Ok(FlowTable {
        program: PROGRAM,
        method: if dir.clsact().exists() {
            TcMethod::Netlink
        } else {
            TcMethod::Tcx
        },
        max_flows: map.max_entries(),
        flows,
        flows_created: totals.flows_created,
        evictions: totals.flows_created.saturating_sub(flows as u64),
        not_ip: totals.not_ip,
        classes: classes::read(&classes::PinnedClassMaps::open(dir)?.maps())?,
    })
}
