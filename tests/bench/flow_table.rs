//! Section 3, flow-table part: `meshbpf flows` on a table of a million flows,
//! next to `bpftool map dump` of the same pinned map. The flows are synthetic
//! and go in through BPF_MAP_UPDATE_BATCH from the bench process: real
//! traffic could not make a million flows in the time a bench may take.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use meshbpf::programs::tc_classifier::{self, flow_key, flow_value};
use nix::time::{clock_gettime, ClockId};
use serde_json::Value;

use crate::common::{self, run, VethPair, BIN};
use crate::stats::{self, Summary};
use crate::Config;

/// Flows in the table.
pub const FLOWS: u32 = 1_000_000;
/// `--max-flows`: room for every flow, so the LRU evicts none of them.
const MAX_FLOWS: u32 = 1 << 20;
/// Flows per BPF_MAP_UPDATE_BATCH call.
const FILL_BATCH: usize = 65_536;
/// `--top`.
const TOP: usize = 10;
/// `--min-bytes` of the filtered query.
const MIN_BYTES: u64 = 1000;
/// The largest flow's bytes; flow of rank r has 64 + ZIPF / (r + 1).
const ZIPF: u64 = 500_000_000;
/// Multiplier of the rank permutation: coprime with FLOWS, so
/// `i × RANK_STEP mod FLOWS` visits every rank once, in scattered order.
const RANK_STEP: u64 = 7919;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// Which bpftool output marks one entry: each has a `formatted` object (the
/// map has BTF), after its raw key and value.
const BPFTOOL_ENTRY: &[u8] = b"\"formatted\":";

/// One timed command; stdout goes to /dev/null.
struct Step {
    what: String,
    argv: Vec<String>,
    samples: Vec<f64>,
}

impl Step {
    fn new(argv: Vec<String>, what: String) -> Step {
        Step {
            what,
            argv,
            samples: Vec::new(),
        }
    }

    /// Spawn to exit, stdout discarded, stderr kept for the failure message.
    fn time(&mut self) {
        let started = Instant::now();
        let out = run(Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdout(Stdio::null()));
        self.samples.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(
            out.status.success(),
            "`{}` failed: {}",
            self.argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub struct Results {
    /// Both meshbpf queries, then bpftool's dump.
    steps: Vec<Step>,
    rounds: usize,
    /// One sample each.
    attach_ms: f64,
    fill_ms: f64,
    detach_ms: f64,
    /// What bpftool printed in the warm-up run, and the entries in it.
    bpftool_json_bytes: u64,
    bpftool_entries: u64,
    /// Flows of the filtered query's kind among the inserted ones.
    tcp_over_min: usize,
}

/// The synthetic flow `i`: IPv4 between 10.x.y.z (one address per flow, so
/// every key is distinct) and 192.0.2.1; 60 % TCP, 35 % UDP, 5 % ICMP;
/// half ingress, half egress. Bytes follow a Zipf-like curve over a
/// permutation of the ranks, so the largest flows are scattered over the
/// table's buckets, and about half the flows are under MIN_BYTES.
fn flow(i: u32, now_ns: u64) -> (flow_key, flow_value) {
    let rank = u64::from(i) * RANK_STEP % u64::from(FLOWS);
    let bytes = 64 + ZIPF / (rank + 1);
    let protocol = match i % 20 {
        0..=11 => TCP,
        12..=18 => UDP,
        _ => ICMP,
    };
    // Services and the payload each looks like (l7_proto).
    let (service, l7) = [(443, 2), (80, 1), (22, 5), (53, 4), (8080, 1)][(i / 20 % 5) as usize];
    let remote = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    let local = [192, 0, 2, 1];
    let ephemeral = 32768 + (i % 28232) as u16;
    let ingress = i % 2 == 0;
    let (ports, l7) = match protocol {
        // Echo request: type 8, code 0.
        ICMP => ((8, 0), 0),
        _ if ingress => ((ephemeral, service), l7),
        _ => ((service, ephemeral), l7),
    };
    let (src, dst) = if ingress {
        (remote, local)
    } else {
        (local, remote)
    };
    let mut key = flow_key {
        sport: ports.0,
        dport: ports.1,
        family: 4,
        protocol,
        direction: u8::from(!ingress),
        ..Default::default()
    };
    key.src[..4].copy_from_slice(&src);
    key.dst[..4].copy_from_slice(&dst);
    let average_packet = 64 + u64::from(i % 1437);
    let second = 1_000_000_000;
    let value = flow_value {
        packets: bytes / average_packet + 1,
        bytes,
        first_seen_ns: now_ns - 3600 * second + u64::from(i % 3000) * second,
        last_seen_ns: now_ns - u64::from(i % 60) * second,
        // SYN ACK PSH, a third with FIN too.
        tcp_flags: if protocol == TCP {
            0x1a | u64::from(i % 3 == 0)
        } else {
            0
        },
        l7,
        ..Default::default()
    };
    (key, value)
}

pub fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// Flows 0..count through BPF_MAP_UPDATE_BATCH, FILL_BATCH at a time.
pub fn fill(map: &MapHandle, now_ns: u64, count: u32) {
    let mut keys = Vec::with_capacity(FILL_BATCH * std::mem::size_of::<flow_key>());
    let mut values = Vec::with_capacity(FILL_BATCH * std::mem::size_of::<flow_value>());
    let ids: Vec<u32> = (0..count).collect();
    for chunk in ids.chunks(FILL_BATCH) {
        keys.clear();
        values.clear();
        for &i in chunk {
            let (key, value) = flow(i, now_ns);
            keys.extend_from_slice(tc_classifier::key_bytes(&key));
            // SAFETY: flow_value is plain data whose every byte is a field.
            values.extend_from_slice(unsafe { plain::as_bytes(&value) });
        }
        map.update_batch(
            &keys,
            &values,
            chunk.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .expect("BPF_MAP_UPDATE_BATCH into the flow table");
    }
}

/// The fields a flow's JSON record must show, as `meshbpf flows -j` names them.
fn expected_record(i: u32, now_ns: u64) -> Value {
    let (key, value) = flow(i, now_ns);
    let addr = |a: &[u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string();
    serde_json::json!({
        "src": addr(&key.src),
        "dst": addr(&key.dst),
        "sport": key.sport,
        "dport": key.dport,
        "protocol_number": key.protocol,
        "direction": if key.direction == 0 { "ingress" } else { "egress" },
        "packets": value.packets,
        "bytes": value.bytes,
    })
}

/// The TOP inserted flows with the most bytes among those `keep` accepts,
/// largest first; asserts that no tie makes the answer ambiguous. Also
/// returns how many flows `keep` accepts.
fn expected_top(now_ns: u64, keep: impl Fn(&flow_key, &flow_value) -> bool) -> (Vec<Value>, usize) {
    let mut kept: Vec<(u64, u32)> = (0..FLOWS)
        .filter_map(|i| {
            let (key, value) = flow(i, now_ns);
            keep(&key, &value).then_some((value.bytes, i))
        })
        .collect();
    let matched = kept.len();
    kept.sort_unstable_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
    assert!(matched > TOP, "the query must leave more than {TOP} flows");
    for pair in kept[..=TOP].windows(2) {
        assert!(
            pair[0].0 > pair[1].0,
            "the synthetic flows tie on bytes within the top {TOP}: the expected answer is ambiguous"
        );
    }
    let records = kept[..TOP]
        .iter()
        .map(|&(_, i)| expected_record(i, now_ns))
        .collect();
    (records, matched)
}

/// Runs a `meshbpf flows` query once and checks it returned exactly `want`,
/// in order.
fn check_query(argv: &[String], want: &[Value]) {
    let out = run(Command::new(&argv[0]).args(&argv[1..]));
    let got = common::Ran::from(out).ok().json();
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("`{}` printed no JSON array", argv.join(" ")));
    assert_eq!(got.len(), want.len(), "`{}`: flow count", argv.join(" "));
    for (n, (got, want)) in got.iter().zip(want).enumerate() {
        for (field, value) in want.as_object().expect("an object") {
            assert_eq!(
                &got[field],
                value,
                "`{}`: flow {n}'s {field} (got {got}, want {want})",
                argv.join(" ")
            );
        }
    }
}

/// Runs bpftool's dump once with stdout into the bench, and returns how many
/// bytes it printed and how many entries those hold.
fn bpftool_output(argv: &[String]) -> (u64, u64) {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running `{}`: {e}", argv.join(" ")));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; 1 << 20];
    // The end of the previous read, so a marker split by a read is found.
    let keep = BPFTOOL_ENTRY.len() - 1;
    let (mut bytes, mut entries, mut carried) = (0u64, 0u64, 0usize);
    loop {
        let n = stdout
            .read(&mut buf[carried..])
            .expect("reading bpftool's output");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let end = carried + n;
        entries += buf[..end]
            .windows(BPFTOOL_ENTRY.len())
            .filter(|w| *w == BPFTOOL_ENTRY)
            .count() as u64;
        carried = keep.min(end);
        buf.copy_within(end - carried..end, 0);
    }
    let out = child.wait_with_output().expect("waiting for bpftool");
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (bytes, entries)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Runs `argv` and returns its wall time in ms, asserting success.
pub fn timed(argv: &[&str]) -> f64 {
    let started = Instant::now();
    let out = run(Command::new(argv[0]).args(&argv[1..]));
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// Where `attach` pins the pair's flow table.
pub fn flows_pin(pair: &VethPair) -> PathBuf {
    pair.pin_dir()
        .join(tc_classifier::PROGRAM)
        .join(tc_classifier::FLOWS_MAP)
}

pub fn measure(config: &Config) -> Results {
    let pair = VethPair::new();
    let dev = pair.dev.clone();
    let flows_pin = flows_pin(&pair);
    let results = VethPair::in_netns(&pair.ns, || measure_in_netns(config, &dev, &flows_pin));
    check_nothing_left(&pair, results.1);
    results.0
}

fn measure_in_netns(config: &Config, dev: &str, flows_pin: &Path) -> (Results, u32) {
    let max_flows = MAX_FLOWS.to_string();
    let attach_ms = timed(&[BIN, "attach", dev, "--max-flows", &max_flows]);
    let map = MapHandle::from_pinned_path(flows_pin)
        .unwrap_or_else(|e| panic!("opening {}: {e}", flows_pin.display()));
    assert_eq!(map.max_entries(), MAX_FLOWS, "the table's --max-flows");
    let map_id = map.info().expect("the flow table's info").info.id;

    let now_ns = monotonic_ns();
    let started = Instant::now();
    fill(&map, now_ns, FLOWS);
    let fill_ms = started.elapsed().as_secs_f64() * 1e3;
    // Every key is distinct and the table has room: nothing may be missing,
    // nor may anything else be in it.
    let held = tc_classifier::read_flows(&map)
        .expect("reading the flow table back")
        .len();
    assert_eq!(held, FLOWS as usize, "flows in the table after the fill");
    drop(map);

    let top = TOP.to_string();
    let min_bytes = MIN_BYTES.to_string();
    let all = argv(&[BIN, "flows", dev, "--top", &top, "-j"]);
    let filtered = argv(&[
        BIN,
        "flows",
        dev,
        "--top",
        &top,
        "--proto",
        "tcp",
        "--min-bytes",
        &min_bytes,
        "-j",
    ]);
    let bpftool = argv(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        &flows_pin.to_string_lossy(),
        "-j",
    ]);

    // Before timing, and as the warm-up round: each command runs once with
    // its output checked.
    let (want_all, _) = expected_top(now_ns, |_, _| true);
    let (want_filtered, tcp_over_min) =
        expected_top(now_ns, |k, v| k.protocol == TCP && v.bytes >= MIN_BYTES);
    check_query(&all, &want_all);
    check_query(&filtered, &want_filtered);
    let (bpftool_json_bytes, bpftool_entries) = bpftool_output(&bpftool);
    assert_eq!(
        bpftool_entries,
        u64::from(FLOWS),
        "entries in bpftool's dump"
    );

    let shown = |argv: &[String]| {
        format!("`{}`", argv.join(" "))
            .replace(BIN, "meshbpf")
            .replace(dev, "DEV")
    };
    let mut steps = vec![
        Step::new(all.clone(), shown(&all)),
        Step::new(filtered.clone(), shown(&filtered)),
        Step::new(
            bpftool.clone(),
            "`bpftool map dump pinned FLOWS -j > /dev/null`".to_string(),
        ),
    ];
    let rounds = config.flow_rounds;
    for round in 0..rounds {
        let n = steps.len();
        for i in (0..n).map(|i| (i + round) % n) {
            steps[i].time();
        }
    }

    let detach_ms = timed(&[BIN, "detach", dev]);
    (
        Results {
            steps,
            rounds,
            attach_ms,
            fill_ms,
            detach_ms,
            bpftool_json_bytes,
            bpftool_entries,
            tcp_over_min,
        },
        map_id,
    )
}

/// The detach left nothing: no pins, no programs on the interface, and the
/// kernel freed the flow table (maps go once their last reference does,
/// shortly after).
fn check_nothing_left(pair: &VethPair, map_id: u32) {
    let pins: PathBuf = pair.pin_dir();
    assert!(
        pins.symlink_metadata().is_err(),
        "{} is still there after detach",
        pins.display()
    );
    assert_eq!(pair.xdp_prog_id(), None, "an XDP program after detach");
    assert_eq!(pair.tc_program_count(), 0, "tc programs after detach");
    let freed = common::wait_for(Duration::from_secs(10), || {
        // SAFETY: plain syscall wrapper; a returned fd is closed at once.
        let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(map_id) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            None
        } else {
            Some(())
        }
    });
    assert!(
        freed.is_some(),
        "the flow table (map id {map_id}) outlived the detach"
    );
}

/// Whole seconds read better than thousands of ms.
fn time(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else {
        stats::ms(ms)
    }
}

impl Results {
    pub fn markdown(&self) -> String {
        let summaries: Vec<Summary> = self.steps.iter().map(|s| Summary::of(&s.samples)).collect();
        let bpftool = summaries[summaries.len() - 1];
        let rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .zip(&summaries)
            .map(|(step, summary)| {
                let mut row = vec![step.what.clone()];
                row.extend(summary.cells(time));
                row.push(format!("×{:.1}", bpftool.median / summary.median));
                row
            })
            .collect();
        let ratio = bpftool.median / summaries[0].median;
        format!(
            "### Flow table of {flows} flows\n\n\
`meshbpf attach DEV --max-flows {max}` (one sample: {attach}), then the bench process fills the pinned table \
FLOWS (`{root}/net/DEV/tc_classifier/flows`, an LRU hash) with {flows} distinct synthetic flows through \
BPF_MAP_UPDATE_BATCH, {batch} per call ({fill} in all): IPv4, 60 % TCP, 35 % UDP, 5 % ICMP, half each \
direction, bytes 64 + 5×10⁸ ⁄ (rank + 1) over a scattered permutation of the ranks ({tcp} TCP flows have at \
least {min} bytes). Read back, the table holds exactly {flows}. Before timing, each command runs once as the warm-up: \
both `meshbpf flows` queries must print exactly the {top} inserted flows with the most bytes (of all, and of TCP \
with at least {min} bytes), largest first, with their addresses, ports, protocol, direction, packets and bytes; \
bpftool's dump must hold all {entries} entries ({json} MB of JSON, raw bytes and BTF-formatted). Then {rounds} \
rounds, interleaved, the order rotating; stdout goes to /dev/null for every command, so no terminal or pipe is \
timed. meshbpf reads the table with BPF_MAP_LOOKUP_BATCH and prints {top} flows; bpftool walks it key by key \
and prints every entry. `meshbpf detach DEV` ({detach}) then leaves no pins, no programs on DEV, and the kernel \
frees the table.\n\n{table}\n\
`meshbpf flows DEV --top {top} -j` takes {mesh}; bpftool's dump of the same table takes ×{ratio:.1} as long.\n",
            flows = stats::thousands(FLOWS as usize),
            max = MAX_FLOWS,
            root = common::ROOT,
            attach = time(self.attach_ms),
            batch = stats::thousands(FILL_BATCH),
            fill = time(self.fill_ms),
            tcp = stats::thousands(self.tcp_over_min),
            min = stats::thousands(MIN_BYTES as usize),
            top = TOP,
            entries = stats::thousands(self.bpftool_entries as usize),
            json = self.bpftool_json_bytes / 1_000_000,
            rounds = self.rounds,
            detach = time(self.detach_ms),
            mesh = time(summaries[0].median),
            table = stats::table(&["command", "median", "min–max", "bpftool ÷ this"], &rows),
        )
    }
}
