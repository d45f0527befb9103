//! Shared fixtures for the integration tests: the privilege gate, a veth
//! pair between two throwaway network namespaces, running the real binary
//! inside them, and sending real traffic.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

pub mod classbench;
pub mod filter;
pub mod frames;
pub mod http;
pub mod kstate;
pub mod monitor;
pub mod promtool;
pub mod raw_ip;
pub mod reference;
pub mod rng;
pub mod serve;
pub mod xdp_counter;

/// The binary under test: cargo's build, or another build of it named by
/// MESHBPF_BIN when the tests are compiled (`make test-static` runs them on
/// the static binary).
pub const BIN: &str = match option_env!("MESHBPF_BIN") {
    Some(bin) => bin,
    None => env!("CARGO_BIN_EXE_meshbpf"),
};
pub const ROOT: &str = "/sys/fs/bpf/meshbpf";

/// Privileged tests run as root. Without root they skip, unless CI demands
/// them (MESHBPF_REQUIRE_PRIVILEGED=1), where a skip would hide a failure.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("MESHBPF_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("this test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and MESHBPF_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("skipping: this test needs root");
    false
}

/// A test that needs root, gated once by [`privileged`]:
///
/// ```ignore
/// privileged_test!(
///     /// What it checks.
///     fn name() {
///         body
///     }
/// );
/// ```
///
/// is `#[test] fn name()` whose body runs only with root: without it the test
/// skips, or fails under MESHBPF_REQUIRE_PRIVILEGED=1. Doc comments and other
/// attributes go before `fn`, inside the parentheses (which rustfmt formats).
#[macro_export]
macro_rules! privileged_test {
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            if !$crate::common::privileged() {
                return;
            }
            $body
        }
    };
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn sh(cmd: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(cmd))
}

pub fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unique per test process and fixture, short enough for interface names.
fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "mb{:x}{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a meshbpf command printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn from(out: Output) -> Self {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
}

/// Runs the real binary in the current namespaces.
pub fn meshbpf(args: &[&str]) -> Ran {
    Ran::from(run(Command::new(BIN).args(args)))
}

/// A veth pair: `dev` in namespace `ns` (where meshbpf attaches) and `peer_dev`
/// in `peer_ns` (where traffic comes from). Addresses are static and so are
/// the neighbour entries, so no ARP or IPv6 chatter adds to the counts.
pub struct VethPair {
    pub ns: String,
    pub peer_ns: String,
    pub dev: String,
    pub peer_dev: String,
}

pub const ADDR: &str = "192.0.2.1";
pub const PEER_ADDR: &str = "192.0.2.2";
pub const ADDR6: &str = "2001:db8::1";
pub const PEER_ADDR6: &str = "2001:db8::2";
pub const MAC: &str = "02:00:00:00:00:01";
pub const PEER_MAC: &str = "02:00:00:00:00:02";

impl VethPair {
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Also configures IPv6 addresses (with static neighbours).
    pub fn with_ipv6() -> Self {
        Self::build(true)
    }

    fn build(ipv6: bool) -> Self {
        let id = unique_id();
        let pair = VethPair {
            ns: format!("{id}n"),
            peer_ns: format!("{id}p"),
            dev: format!("{id}a"),
            peer_dev: format!("{id}b"),
        };
        let (ns, pns, dev, pdev) = (&pair.ns, &pair.peer_ns, &pair.dev, &pair.peer_dev);
        must(&format!("ip netns add {ns} && ip netns add {pns}"));
        must(&format!(
            "ip link add {dev} netns {ns} address {MAC} type veth peer name {pdev} netns {pns} address {PEER_MAC}"
        ));
        let v6 = if ipv6 { 0 } else { 1 };
        for (n, d) in [(ns, dev), (pns, pdev)] {
            must(&format!(
                "ip netns exec {n} sysctl -qw net.ipv6.conf.all.disable_ipv6={v6} net.ipv6.conf.default.disable_ipv6={v6} net.ipv6.conf.{d}.disable_ipv6={v6}"
            ));
            if ipv6 {
                // No DAD, router solicitations or MLD reports: the counts stay exact.
                must(&format!(
                    "ip netns exec {n} sysctl -qw net.ipv6.conf.{d}.accept_dad=0 net.ipv6.conf.{d}.router_solicitations=0 net.ipv6.conf.{d}.mldv2_unsolicited_report_interval=0 net.ipv6.conf.{d}.mldv1_unsolicited_report_interval=0"
                ));
            }
        }
        must(&format!("ip -n {ns} addr add {ADDR}/24 dev {dev} && ip -n {pns} addr add {PEER_ADDR}/24 dev {pdev}"));
        must(&format!(
            "ip -n {ns} neigh add {PEER_ADDR} lladdr {PEER_MAC} dev {dev} nud permanent"
        ));
        must(&format!(
            "ip -n {pns} neigh add {ADDR} lladdr {MAC} dev {pdev} nud permanent"
        ));
        if ipv6 {
            must(&format!(
                "ip -n {ns} addr add {ADDR6}/64 dev {dev} nodad && ip -n {pns} addr add {PEER_ADDR6}/64 dev {pdev} nodad"
            ));
            must(&format!(
                "ip -n {ns} neigh add {PEER_ADDR6} lladdr {PEER_MAC} dev {dev} nud permanent"
            ));
            must(&format!(
                "ip -n {pns} neigh add {ADDR6} lladdr {MAC} dev {pdev} nud permanent"
            ));
        }
        must(&format!(
            "ip -n {ns} link set lo up && ip -n {ns} link set {dev} up"
        ));
        must(&format!(
            "ip -n {pns} link set lo up && ip -n {pns} link set {pdev} up"
        ));
        pair
    }

    /// Gives the peer another IPv4 address (a second traffic source), with
    /// static neighbour entries so no ARP joins the counts.
    pub fn add_peer_address(&self, addr: &str) {
        must(&format!(
            "ip -n {} addr add {addr}/24 dev {}",
            self.peer_ns, self.peer_dev
        ));
        must(&format!(
            "ip -n {} neigh add {addr} lladdr {PEER_MAC} dev {} nud permanent",
            self.ns, self.dev
        ));
    }

    /// Runs the real binary inside the attach namespace. nsenter keeps the
    /// host's /sys, so bpffs stays visible (`ip netns exec` would remount it).
    pub fn meshbpf(&self, args: &[&str]) -> Ran {
        Ran::from(run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(BIN)
            .args(args)))
    }

    /// Runs `f` on a thread that lives in namespace `ns`; sockets it opens
    /// belong to that namespace.
    pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread panicked")
        })
    }

    /// Sends `count` UDP datagrams of `payload` bytes from the peer to `to`.
    pub fn send_udp(&self, to: SocketAddr, count: usize, payload: usize) {
        Self::in_netns(&self.peer_ns, || {
            let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            let sock = UdpSocket::bind(bind).expect("bind udp");
            for _ in 0..count {
                sock.send_to(&vec![0x5a; payload], to).expect("send udp");
            }
        });
    }

    /// `ping -c count` from the peer; asserts every echo was answered.
    pub fn ping(&self, to: &str, count: u32) {
        must(&format!(
            "ip netns exec {} ping -q -n -c {count} -i 0.05 -W 2 {to}",
            self.peer_ns
        ));
    }

    /// The XDP program id on `dev`, as iproute2 reports it.
    pub fn xdp_prog_id(&self) -> Option<u64> {
        let out =
            run(Command::new("ip")
                .args(["-n", &self.ns, "-j", "-d", "link", "show", "dev", &self.dev]));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        links[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// How many programs run on `dev`'s tcx hooks (asked of the kernel:
    /// Debian's bpftool predates tcx; a kernel without tcx has none) and
    /// clsact filters (from bpftool).
    pub fn tc_program_count(&self) -> usize {
        let tcx = if kernel_has_tcx() {
            self.tcx_program_count()
        } else {
            0
        };
        let out = run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["bpftool", "-j", "net", "show", "dev", &self.dev]));
        let shown: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("bpftool -j net show");
        tcx + shown[0]["tc"].as_array().map_or(0, Vec::len)
    }

    fn tcx_program_count(&self) -> usize {
        Self::in_netns(&self.ns, || {
            let index =
                nix::net::if_::if_nametoindex(self.dev.as_str()).expect("the device exists");
            [libbpf_sys::BPF_TCX_INGRESS, libbpf_sys::BPF_TCX_EGRESS]
                .iter()
                .map(|attach_type| {
                    // SAFETY: plain data; sz tells libbpf which fields we know.
                    let mut opts: libbpf_sys::bpf_prog_query_opts = unsafe { std::mem::zeroed() };
                    opts.sz = std::mem::size_of_val(&opts) as _;
                    let ret = unsafe {
                        libbpf_sys::bpf_prog_query_opts(index as i32, *attach_type, &mut opts)
                    };
                    assert_eq!(ret, 0, "querying tcx programs");
                    // SAFETY: the kernel filled in the count member of the union.
                    unsafe { opts.__bindgen_anon_1.count as usize }
                })
                .sum::<usize>()
        })
    }

    /// The veth's own packet and byte counters in one direction ("rx" or
    /// "tx"), which the kernel keeps independently of any program.
    pub fn link_stats(&self, direction: &str) -> (u64, u64) {
        let out =
            run(Command::new("ip")
                .args(["-n", &self.ns, "-j", "-s", "link", "show", "dev", &self.dev]));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let counters = &links[0]["stats64"][direction];
        (
            counters["packets"].as_u64().expect("packets"),
            counters["bytes"].as_u64().expect("bytes"),
        )
    }

    pub fn pin_dir(&self) -> PathBuf {
        Path::new(ROOT).join("net").join(&self.dev)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Pins outlive interfaces: remove them even when the test failed.
        let _ = Command::new(BIN)
            .args(["detach", &self.dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer_ns])
            .status();
    }
}

/// Runs `script` in a private mount namespace (with `$BIN` set), so unmounting
/// bpffs or tracefs, or hiding BTF there, cannot disturb the host or other
/// tests.
pub fn in_private_mounts(script: &str) -> Ran {
    Ran::from(run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-ec",
            script,
        ])
        .env("BIN", BIN)))
}

pub const UNMOUNT_BPFFS: &str = "while umount /sys/fs/bpf 2>/dev/null; do :; done";

/// Runs the real binary as nobody, without capabilities. The checkout may
/// sit where nobody cannot reach: a copy it can reach runs.
pub fn as_nobody(args: &[&str]) -> Ran {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("meshbpf");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Copied by another process: a copy written from this one leaves its fd,
    // for a moment, in every child another test thread forks meanwhile, and
    // executing the copy then fails with ETXTBSY.
    must(&format!("install -m 0755 {BIN} {}", bin.display()));
    Ran::from(run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&bin)
        .args(args)))
}

/// Whether the running kernel has tcx (Linux 6.6 and later), so meshbpf is
/// expected to pick it over netlink clsact; the VM tests boot older kernels.
pub fn kernel_has_tcx() -> bool {
    let release =
        fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading the kernel release");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (6, 6)
}

/// Compiles a fixture program from tests/fixtures with the same clang the
/// build uses, into a fresh temporary directory.
pub fn compile_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    compile_fixture_for(name, "bpf")
}

/// [`compile_fixture`] for a clang target: `bpf` (the host's byte order),
/// `bpfel` or `bpfeb`.
pub fn compile_fixture_for(name: &str, target: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.bpf.c"));
    let obj = dir.path().join(format!("{name}.bpf.o"));
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into());
    let out = run(Command::new(clang)
        .args(["-g", "-O2", "-target", target, "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj));
    assert!(
        out.status.success(),
        "compiling {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, obj)
}

/// A program that waits for a byte on stdin (see [`release`]) before doing
/// what it is for, so its pid is known before it acts.
pub fn blocked(command: &mut std::process::Command) -> std::process::Child {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"))
}

/// A [`blocked`] python3 that runs `body` (with os, sys and time imported)
/// once released, and exits.
pub fn held_python(body: &str) -> std::process::Child {
    blocked(Command::new("/usr/bin/python3").args([
        "-c",
        &format!("import os, sys, time\nsys.stdin.buffer.raw.read(1)\n{body}"),
    ]))
}

/// Lets a [`blocked`] child go, waits for it to succeed, and returns what
/// it printed.
pub fn release(mut child: std::process::Child) -> String {
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"x")
        .expect("releasing the child");
    let out = child.wait_with_output().expect("waiting for the child");
    assert!(out.status.success(), "child failed: {}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 from the child")
}

/// Polls `probe` until it returns Some or `timeout` passes: tests wait for a
/// condition, never for a fixed time.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A pin root of its own under /sys/fs/bpf (`--bpffs`), so that tests
/// loading objects or attaching syscall_latency never see each other's. What
/// a test leaves there, even when it fails, is detached, unloaded and removed
/// on drop.
pub struct PinRoot {
    pub path: PathBuf,
}

impl PinRoot {
    pub fn new() -> Self {
        PinRoot {
            path: Path::new("/sys/fs/bpf").join(unique_id()),
        }
    }

    /// `args` with `--bpffs` pointing here.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--bpffs", self.path.to_str().expect("a UTF-8 path")]);
        all
    }

    /// Runs the real binary on this root.
    pub fn meshbpf(&self, args: &[&str]) -> Ran {
        meshbpf(&self.args(args))
    }

    /// The lsm_monitor element of `stats -j`.
    pub fn lsm_stats(&self) -> serde_json::Value {
        let all = self.meshbpf(&["stats", "-j"]).ok().json();
        all.as_array()
            .unwrap_or_else(|| panic!("stats is not an array: {all}"))
            .iter()
            .find(|entry| entry["program"] == "lsm_monitor")
            .unwrap_or_else(|| panic!("no lsm_monitor in {all}"))
            .clone()
    }

    /// `events -j ARGS`: the event lines, and the summary line that ends them.
    pub fn events(&self, args: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
        let mut all = vec!["events", "-j"];
        all.extend(args);
        let ran = self.meshbpf(&all).ok();
        let mut lines: Vec<serde_json::Value> = ran
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let summary = lines.pop().expect("a summary line");
        assert_eq!(summary["type"], "summary", "{summary}");
        (lines, summary)
    }

    /// Where loaded objects are pinned.
    pub fn loaded(&self) -> PathBuf {
        self.path.join("loaded")
    }

    /// The names in `loaded/`: what `load` left behind.
    pub fn loaded_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.loaded())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        for host_wide in ["--latency", "--lsm"] {
            let _ = Command::new(BIN)
                .args(self.args(&["detach", host_wide]))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for name in self.loaded_entries() {
            let _ = Command::new(BIN)
                .args(self.args(&["unload", &name]))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The values of a pinned array map of u64, as bpftool (not meshbpf)
/// reads them.
pub fn bpftool_u64_array(pin: &Path) -> Vec<u64> {
    let out = run(Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin));
    assert!(
        out.status.success(),
        "bpftool map dump pinned {}: {}",
        pin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool -j");
    entries
        .as_array()
        .expect("an array of entries")
        .iter()
        .map(|e| e["formatted"]["value"].as_u64().expect("a u64 value"))
        .collect()
}

/// Whether the kernel still has a link of this id.
pub fn link_exists(id: u64) -> bool {
    // SAFETY: a plain syscall wrapper; a returned fd is closed right away.
    let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id as u32) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// Whether the kernel still has a program of this id.
pub fn prog_exists(id: u64) -> bool {
    run(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]))
        .status
        .success()
}

/// The element of a JSON array whose "name" is `name` (objects, programs
/// and maps in `list -j`).
pub fn named<'a>(items: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {items}"))
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("nothing named {name} in {items}"))
}

/// The programs `detach -j` reports, sorted.
pub fn detached_programs(detached: &serde_json::Value) -> Vec<String> {
    let mut programs: Vec<String> = detached["detached"]
        .as_array()
        .unwrap_or_else(|| panic!("no detached array in {detached}"))
        .iter()
        .map(|d| d["program"].as_str().unwrap().to_string())
        .collect();
    programs.sort();
    programs
}
