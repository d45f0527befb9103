//! An oracle of meshbpf's state that does not ask meshbpf: what is pinned
//! under a root (each pin opened and named by the kernel), what the kernel
//! runs on an interface (iproute2 for XDP and netlink tc, BPF_PROG_QUERY for
//! tcx) and how those programs judge a few probe frames (BPF_PROG_TEST_RUN),
//! as a set of lines without ids, so two states compare with `==`.
//! tests/crash.rs compares the state a killed command leaves with the one
//! before and after it.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::frames::Frame;
use super::{run, VethPair, ADDR, PEER_ADDR};
use meshbpf::programs::tc_classifier::skel::types::__sk_buff;

/// A normalized state: one line per pin, per program the kernel runs on the
/// interface, and per verdict of those programs on the probe frames.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct State(pub BTreeSet<String>);

impl State {
    /// From `self` to `to`: `-line` for what went, `+line` for what came.
    pub fn diff(&self, to: &State) -> Vec<String> {
        let gone = self.0.difference(&to.0).map(|l| format!("-{l}"));
        let came = to.0.difference(&self.0).map(|l| format!("+{l}"));
        gone.chain(came).collect()
    }
}

/// What a pin holds, as the kernel describes it.
pub enum Pinned {
    Prog { id: u32, name: String },
    Map { name: String, kind: u32 },
    Link { id: u32, kind: u32, prog_id: u32 },
    Unreadable(String),
}

fn name_of(raw: &[std::os::raw::c_char]) -> String {
    raw.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

fn owned(fd: i32) -> Option<OwnedFd> {
    // SAFETY: a non-negative return of a libbpf fd call is a new fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_info(fd: &OwnedFd) -> Option<libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is plain data of len bytes; the kernel writes at most len.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(info)
}

fn map_info(fd: &OwnedFd) -> Option<libbpf_sys::bpf_map_info> {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: as in prog_info.
    let ret = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(info)
}

fn link_info(fd: &OwnedFd) -> Option<libbpf_sys::bpf_link_info> {
    // SAFETY: bpf_link_info is plain data (a union of plain structs).
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: as in prog_info.
    let ret = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(info)
}

/// Opens a pin and asks the kernel what it is.
pub fn pinned(path: &Path) -> Pinned {
    let c = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: c is a valid C string for the duration of the call.
    let Some(fd) = owned(unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) }) else {
        return Pinned::Unreadable(std::io::Error::last_os_error().to_string());
    };
    // One info call serves every object type: the fd's own kind says which
    // struct the kernel fills in.
    let kind = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    let known = match kind.as_str() {
        "anon_inode:bpf-prog" => prog_info(&fd).map(|info| Pinned::Prog {
            id: info.id,
            name: name_of(&info.name),
        }),
        "anon_inode:bpf-map" => map_info(&fd).map(|info| Pinned::Map {
            name: name_of(&info.name),
            kind: info.type_,
        }),
        "anon_inode:bpf-link" => link_info(&fd).map(|info| Pinned::Link {
            id: info.id,
            kind: info.type_,
            prog_id: info.prog_id,
        }),
        _ => None,
    };
    known.unwrap_or_else(|| Pinned::Unreadable(format!("an object of kind {kind:?}")))
}

/// The name of a program by id; None once it is gone.
pub fn prog_name(id: u32) -> Option<String> {
    // SAFETY: a plain syscall wrapper.
    let fd = owned(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) })?;
    prog_info(&fd).map(|i| name_of(&i.name))
}

fn link_kind(kind: u32) -> String {
    match kind {
        libbpf_sys::BPF_LINK_TYPE_RAW_TRACEPOINT => "raw_tracepoint".into(),
        libbpf_sys::BPF_LINK_TYPE_TRACING => "tracing".into(),
        libbpf_sys::BPF_LINK_TYPE_XDP => "xdp".into(),
        libbpf_sys::BPF_LINK_TYPE_PERF_EVENT => "perf_event".into(),
        libbpf_sys::BPF_LINK_TYPE_KPROBE_MULTI => "kprobe_multi".into(),
        libbpf_sys::BPF_LINK_TYPE_TCX => "tcx".into(),
        libbpf_sys::BPF_LINK_TYPE_CGROUP => "cgroup".into(),
        other => format!("type {other}"),
    }
}

/// Every file and directory under `dir`, depth first.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((path.clone(), is_dir));
        if is_dir {
            walk(&path, out);
        }
    }
}

/// The programs and links pins under `root` keep alive, and the names of
/// the programs among them.
#[derive(Default)]
pub struct Reachable {
    pub progs: HashSet<u32>,
    pub links: HashSet<u32>,
    pub names: BTreeSet<String>,
}

pub fn reachable(root: &Path) -> Reachable {
    let mut all = Vec::new();
    walk(root, &mut all);
    let mut found = Reachable::default();
    for (path, is_dir) in all {
        if is_dir {
            continue;
        }
        match pinned(&path) {
            Pinned::Prog { id, name } => {
                found.progs.insert(id);
                found.names.insert(name);
            }
            Pinned::Link { id, prog_id, .. } => {
                found.links.insert(id);
                found.progs.insert(prog_id);
                if let Some(name) = prog_name(prog_id) {
                    found.names.insert(name);
                }
            }
            _ => {}
        }
    }
    found
}

/// The pin lines of a state. The directories right under the root (net/,
/// host/, loaded/) are containers that one command leaves and another
/// sweeps; what is in them is the state.
fn pin_lines(root: &Path, lines: &mut BTreeSet<String>) {
    let mut all = Vec::new();
    walk(root, &mut all);
    for (path, is_dir) in all {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        if is_dir {
            if rel.contains('/') {
                lines.insert(format!("pin {rel}/"));
            }
            continue;
        }
        let what = match pinned(&path) {
            Pinned::Prog { name, .. } => format!("prog {name}"),
            Pinned::Map { name, kind } => format!("map {name} (type {kind})"),
            Pinned::Link { kind, prog_id, .. } => format!(
                "{} link running {}",
                link_kind(kind),
                prog_name(prog_id).unwrap_or_else(|| format!("gone program {prog_id}"))
            ),
            Pinned::Unreadable(why) => format!("unreadable: {why}"),
        };
        lines.insert(format!("pin {rel}: {what}"));
    }
}

/// A program the kernel runs on the interface, by hook.
pub struct Running {
    pub hook: String,
    pub prog_id: u32,
    pub name: String,
}

/// What the kernel runs on the interface: XDP, then netlink tc filters,
/// then tcx links; `lines` gets the clsact qdisc when there is one.
fn running_with(net: &VethPair, lines: &mut BTreeSet<String>) -> Vec<Running> {
    let mut running = xdp_running(net);
    running.extend(netlink_running(net, lines));
    running.extend(tcx_running(net));
    running
}

/// What the kernel runs on the interface, XDP first.
pub fn running_on(net: &VethPair) -> Vec<Running> {
    running_with(net, &mut BTreeSet::new())
}

fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn xdp_running(net: &VethPair) -> Vec<Running> {
    let links = json_of(
        Command::new("ip").args(["-n", &net.ns, "-j", "-d", "link", "show", "dev", &net.dev]),
    );
    let xdp = &links[0]["xdp"];
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "skb",
        Some(3) => "hw",
        _ => "?",
    };
    xdp["attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some(Running {
                hook: format!("xdp {mode}"),
                prog_id: a["prog"]["id"].as_u64()? as u32,
                name: a["prog"]["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

fn netlink_running(net: &VethPair, lines: &mut BTreeSet<String>) -> Vec<Running> {
    let qdiscs =
        json_of(Command::new("tc").args(["-n", &net.ns, "-j", "qdisc", "show", "dev", &net.dev]));
    for q in qdiscs.as_array().into_iter().flatten() {
        if q["kind"] == "clsact" {
            lines.insert("qdisc clsact".into());
        }
    }
    let mut found = Vec::new();
    for dir in ["ingress", "egress"] {
        let filters = json_of(
            Command::new("tc").args(["-n", &net.ns, "-j", "filter", "show", "dev", &net.dev, dir]),
        );
        for f in filters.as_array().into_iter().flatten() {
            let options = &f["options"];
            let Some(id) = options["prog"]["id"].as_u64() else {
                continue;
            };
            found.push(Running {
                hook: format!(
                    "tc {dir} {} pref {} handle {}",
                    f["kind"].as_str().unwrap_or("?"),
                    f["pref"],
                    options["handle"].as_str().unwrap_or("?")
                ),
                prog_id: id as u32,
                name: options["prog"]["name"].as_str().unwrap_or("?").to_string(),
            });
        }
    }
    found
}

fn tcx_running(net: &VethPair) -> Vec<Running> {
    let ids = VethPair::in_netns(&net.ns, || {
        let index = nix::net::if_::if_nametoindex(net.dev.as_str()).expect("the device exists");
        [
            ("ingress", libbpf_sys::BPF_TCX_INGRESS),
            ("egress", libbpf_sys::BPF_TCX_EGRESS),
        ]
        .into_iter()
        .flat_map(|(dir, attach_type)| {
            let mut ids = [0u32; 64];
            let mut opts = libbpf_sys::bpf_prog_query_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
                prog_ids: ids.as_mut_ptr(),
                ..Default::default()
            };
            opts.__bindgen_anon_1.count = ids.len() as u32;
            // SAFETY: prog_ids points at `count` u32s that outlive the call.
            let ret =
                unsafe { libbpf_sys::bpf_prog_query_opts(index as i32, attach_type, &mut opts) };
            assert_eq!(ret, 0, "BPF_PROG_QUERY of tcx {dir}");
            // SAFETY: the kernel set count to the number of ids it wrote.
            let count = unsafe { opts.__bindgen_anon_1.count } as usize;
            ids[..count]
                .iter()
                .map(move |id| (dir, *id))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
    });
    ids.into_iter()
        .map(|(dir, id)| Running {
            hook: format!("tcx {dir}"),
            prog_id: id,
            name: prog_name(id).unwrap_or_else(|| "?".into()),
        })
        .collect()
}

/// Frames whose verdicts tell tests/crash.rs's rule files apart: UDP from
/// 10.9.9.9, TCP to port 22 from 10.1.2.3 and UDP to 5001 from the peer.
pub fn probe_frames() -> Vec<Vec<u8>> {
    let to: std::net::Ipv4Addr = ADDR.parse().unwrap();
    let peer: std::net::Ipv4Addr = PEER_ADDR.parse().unwrap();
    vec![
        Frame::eth()
            .ipv4([10, 9, 9, 9], to)
            .udp(4000, 5002)
            .payload(16)
            .build(),
        Frame::eth().ipv4([10, 1, 2, 3], to).tcp(4000, 22).build(),
        Frame::eth()
            .ipv4(peer, to)
            .udp(4000, 5001)
            .payload(16)
            .build(),
    ]
}

/// BPF_PROG_TEST_RUN of a program by id on `frame`: its return value and,
/// for an skb program, the mark and priority it left.
fn test_run(prog_id: u32, frame: &[u8], skb: bool) -> String {
    // SAFETY: a plain syscall wrapper.
    let Some(fd) = owned(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(prog_id) }) else {
        return "gone".into();
    };
    let mut data_out = vec![0u8; frame.len() + 256];
    let ctx_in = vec![0u8; std::mem::size_of::<__sk_buff>()];
    let mut ctx_out = ctx_in.clone();
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        data_out: data_out.as_mut_ptr().cast(),
        data_size_out: data_out.len() as u32,
        repeat: 1,
        ..Default::default()
    };
    if skb {
        opts.ctx_in = ctx_in.as_ptr().cast();
        opts.ctx_size_in = ctx_in.len() as u32;
        opts.ctx_out = ctx_out.as_mut_ptr().cast();
        opts.ctx_size_out = ctx_out.len() as u32;
    }
    // SAFETY: every pointer in opts points into a buffer of the size given
    // beside it, alive for the call.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd.as_raw_fd(), &mut opts) };
    if ret != 0 {
        return format!("test run failed ({})", std::io::Error::last_os_error());
    }
    if !skb {
        return opts.retval.to_string();
    }
    let word = |at: usize| u32::from_ne_bytes(ctx_out[at..at + 4].try_into().unwrap());
    format!(
        "{} mark {:#x} priority {:#x}",
        opts.retval,
        word(std::mem::offset_of!(__sk_buff, mark)),
        word(std::mem::offset_of!(__sk_buff, priority))
    )
}

/// The whole state: the pins under `root` and, with an interface, what runs
/// on it and how it judges the probe frames.
pub fn observe(root: &Path, net: Option<&VethPair>) -> State {
    let mut lines = BTreeSet::new();
    pin_lines(root, &mut lines);
    if let Some(net) = net {
        let running = running_with(net, &mut lines);
        let frames = probe_frames();
        for r in &running {
            lines.insert(format!("runs {}: {}", r.hook, r.name));
            let skb = !r.hook.starts_with("xdp");
            let verdicts: Vec<String> =
                frames.iter().map(|f| test_run(r.prog_id, f, skb)).collect();
            lines.insert(format!(
                "judges {} {}: {}",
                r.hook,
                r.name,
                verdicts.join(", ")
            ));
        }
    }
    State(lines)
}

/// Programs the kernel runs on the interface that no pin under `root`
/// keeps: once the command that attached them is gone, nothing can name
/// them to detach them.
pub fn unpinned_on_interface(root: &Path, net: &VethPair) -> Vec<String> {
    let pinned = reachable(root);
    running_on(net)
        .into_iter()
        .filter(|r| !pinned.progs.contains(&r.prog_id))
        .map(|r| {
            format!(
                "{} runs {} (id {}) with no pin under the root",
                r.hook, r.name, r.prog_id
            )
        })
        .collect()
}

/// CLOCK_BOOTTIME in ns, the clock of a program's load_time.
pub fn boottime_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// The largest link id the kernel has now; links made later have larger ids.
pub fn last_link_id() -> u32 {
    let mut id = 0;
    let mut next = 0;
    // SAFETY: a plain syscall wrapper writing one u32.
    while unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } == 0 {
        id = next;
    }
    id
}

/// Links made after `since` that run a program named in `names`, loaded
/// within `loaded` (CLOCK_BOOTTIME ns: the life of the killed command).
/// Links of a killed process are released with its fds, so one of these
/// that no pin on /sys/fs/bpf keeps (another test's pins included), and
/// that is still there a moment later, runs with nothing to name it.
pub fn unpinned_host_links(
    since: u32,
    names: &BTreeSet<String>,
    loaded: std::ops::Range<u64>,
) -> Vec<String> {
    let candidates = || -> Vec<(u32, String)> {
        let mut found = Vec::new();
        let mut id = since;
        let mut next = 0;
        // SAFETY: a plain syscall wrapper writing one u32.
        while unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } == 0 {
            id = next;
            // SAFETY: a plain syscall wrapper.
            let Some(fd) = owned(unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) }) else {
                continue;
            };
            let Some(info) = link_info(&fd) else { continue };
            // SAFETY: a plain syscall wrapper.
            let Some(prog) = owned(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(info.prog_id) })
                .and_then(|fd| prog_info(&fd))
            else {
                continue;
            };
            let name = name_of(&prog.name);
            if names.contains(&name) && loaded.contains(&prog.load_time) {
                found.push((
                    id,
                    format!("{} link {id} runs {name}", link_kind(info.type_)),
                ));
            }
        }
        found
    };
    if candidates().is_empty() {
        return Vec::new();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let anywhere = reachable(Path::new("/sys/fs/bpf"));
    candidates()
        .into_iter()
        .filter(|(id, _)| !anywhere.links.contains(id))
        .map(|(_, what)| format!("{what} with no pin anywhere on /sys/fs/bpf"))
        .collect()
}

/// strace's options that SIGKILL the traced command on entry to its `n`-th
/// call of `syscall`, and print nothing.
pub fn kill_at_call(syscall: &str, n: impl std::fmt::Display) -> Vec<String> {
    [
        "-o".to_string(),
        "/dev/null".into(),
        "-e".into(),
        format!("trace={syscall}"),
        "-e".into(),
        format!("inject={syscall}:signal=KILL:when={n}"),
    ]
    .into()
}
