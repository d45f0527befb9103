//! xdp_counter: per-CPU packet and byte counters by L3 and L4 protocol,
//! and `meshbpf capture` of the packets it passes (all of them).

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Result;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::OpenObject;

use crate::health::Check;
use crate::kernel::btf::OpenOpts;
use crate::kernel::netdev::Interface;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpfobj, verifier};
use crate::programs::capture::{self, capture_maps};
use crate::programs::{Facets, Scope};
use traffic::COUNTERS_MAP;

pub mod metrics;
pub mod skel;
pub mod traffic;

pub use skel::XdpCounterSkel;

pub const PROGRAM: &str = "xdp_counter";

pub const FACETS: Facets = Facets {
    name: PROGRAM,
    scope: Scope::Interface,
    metrics: metrics::families,
    health: Some(health_checks),
    stats: None,
};

fn health_checks(dir: &AttachmentDir, _max_drop_percent: u8) -> Result<Vec<Check>> {
    Ok(vec![capture::check(dir)?])
}

/// Opens and loads the program into the kernel, unattached.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
) -> Result<XdpCounterSkel<'obj>> {
    load_counting_into(object, btf, None)
}

/// Loads the program; with `from`, it counts on in that attachment's
/// pinned counters instead of fresh ones, so a swap does not reset the
/// l3/l4 counts, and a capture running there goes on here.
fn load_counting_into<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
    from: Option<&AttachmentDir>,
) -> Result<XdpCounterSkel<'obj>> {
    let opts = OpenOpts::new(btf)?;
    verifier::load(PROGRAM, || {
        let mut open = skel::XdpCounterSkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        if let Some(from) = from {
            open.maps
                .counters
                .reuse_pinned_map(from.map(COUNTERS_MAP))?;
            capture::reuse(capture_maps!(mut open.maps), from)?;
        }
        open.load()
    })
}

/// Pins the program, its counters and its capture maps into `dir`, which
/// stays uncommitted until a link pin joins them.
pub fn pin(skel: &XdpCounterSkel<'_>, dir: &AttachmentDir) -> Result<()> {
    dir.create()?;
    bpfobj::pin(skel.maps.counters.as_fd(), &dir.map(COUNTERS_MAP))?;
    capture::pin(capture_maps!(skel.maps), dir)?;
    bpfobj::pin(skel.progs.xdp_counter.as_fd(), &dir.prog())
}

/// Loads, attaches and pins; the link pin goes last and commits the attachment.
/// `ready` runs between the load and the link, and its error stops it.
pub fn attach(
    dir: &AttachmentDir,
    iface: &Interface,
    mode: XdpMode,
    btf: Option<&Path>,
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load(&mut object, btf)?;
    ready()?;
    let link = xdp::create_link(skel.progs.xdp_counter.as_fd(), iface, mode)?;
    pin(&skel, dir)?;
    bpfobj::pin(link.as_fd(), &dir.link())
}

/// Loads and pins into `dir`, uncommitted, counting on in the counters of
/// `from`: a swap then moves `from`'s link onto it.
pub fn install(dir: &AttachmentDir, btf: Option<&Path>, from: &AttachmentDir) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load_counting_into(&mut object, btf, Some(from))?;
    pin(&skel, dir)
}
