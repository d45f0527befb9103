//! Section 9: `meshbpf capture`. Per packet: BPF_PROG_TEST_RUN of
//! xdp_counter and of xdp_mesh_filter (section 2's 100 CIDR rules, on a
//! packet that misses them and passes by default) with no capture running,
//! with one whose selection matches none of the packets (a source CIDR no
//! frame has), and with one that selects every packet, on a 64-byte and a
//! 1,514-byte frame, next to the empty program in one interleaved run. A
//! selected packet is copied into the ring buffer, which holds about 5,300
//! records, so every call runs [`REPEAT`] times (all rows alike) and the
//! ring is emptied before each; a run is checked first to land where its
//! row says (copied, or not), and no row may lose a record.
//!
//! End to end: the release binary's `meshbpf capture DEV -w FILE` on
//! xdp_counter attached to a veth, stopped (SIGSTOP) while BPF_PROG_TEST_RUN
//! of the attached program fills the ring with [`BURST`] packets, then
//! timed from SIGCONT until the file holds them: packets per second written
//! to a file, and what the capture reports lost (must be 0).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBufferBuilder};
use meshbpf::programs::maps::{bytes, read_per_cpu};
use meshbpf::programs::xdp_counter::skel::types::{capture_selection, capture_stats};
use meshbpf::programs::xdp_counter::{self, XdpCounterSkel};
use meshbpf::programs::xdp_mesh_filter::XdpMeshFilterSkel;

use crate::common::{VethPair, BIN};
use crate::filter::{self, Packet};
use crate::frames::{self, Frame};
use crate::packet::{self, Case, Subject};
use crate::stats::{self, Summary};
use crate::{rulesets, Config};

/// Runs per BPF_PROG_TEST_RUN call: the ring holds about 5,300 records.
const REPEAT: u32 = 4_000;
/// Calls per round and row, each after the ring is emptied.
const CALLS: usize = 5;
/// Packets per end-to-end burst: what the ring holds, with room to spare.
const BURST: u32 = 5_000;
const ROOT: &str = "/sys/fs/bpf/meshbpf-bench-capture";
/// The capture process runs here, the bench on crate::CPU.
const READER_CPU: usize = 0;
/// A source no frame has: a capture selecting it selects nothing.
const NOBODY: [u8; 4] = [203, 0, 113, 0];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    SelectsNothing,
    SelectsAll,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Off, Mode::SelectsNothing, Mode::SelectsAll];

    fn describe(self) -> &'static str {
        match self {
            Mode::Off => "no capture",
            Mode::SelectsNothing => "a capture selecting nothing",
            Mode::SelectsAll => "a capture selecting every packet",
        }
    }

    /// The selection in the kernel's form.
    fn control(self) -> capture_selection {
        let mut c = capture_selection {
            enabled: u32::from(self != Mode::Off),
            verdicts: u32::MAX,
            snaplen: meshbpf::programs::capture::MAX_SNAPLEN,
            ..Default::default()
        };
        if self == Mode::SelectsNothing {
            c.conditions = 2; // CAPTURE_MATCH_SRC
            c.src_family = 4;
            c.src[..4].copy_from_slice(&NOBODY);
            c.src_mask[..3].fill(0xff);
        }
        c
    }
}

/// A loaded program with its capture maps.
struct Program {
    name: &'static str,
    fd: OwnedFd,
    control: MapHandle,
    ring: MapHandle,
    stats: MapHandle,
}

macro_rules! program_of {
    ($name:expr, $skel:expr, $prog:ident) => {
        Program {
            name: $name,
            fd: $skel.progs.$prog.as_fd().try_clone_to_owned().expect("dup"),
            control: MapHandle::try_from(&$skel.maps.capture_control).expect("dup"),
            ring: MapHandle::try_from(&$skel.maps.capture_ring).expect("dup"),
            stats: MapHandle::try_from(&$skel.maps.capture_stats).expect("dup"),
        }
    };
}

impl Program {
    fn counter(skel: &XdpCounterSkel<'_>) -> Program {
        program_of!("xdp_counter", skel, xdp_counter)
    }

    fn filter(skel: &XdpMeshFilterSkel<'_>) -> Program {
        program_of!("xdp_mesh_filter, 100 CIDR rules", skel, xdp_mesh_filter)
    }

    fn select(&self, mode: Mode) {
        self.control
            .update(&0u32.to_ne_bytes(), bytes(&mode.control()), MapFlags::ANY)
            .expect("writing the capture selection");
    }

    /// Empties the ring buffer; the records it held.
    fn drain(&self) -> usize {
        let mut records = 0;
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.ring, |_: &[u8]| {
                records += 1;
                0
            })
            .expect("adding the capture ring");
        builder
            .build()
            .expect("mapping the capture ring")
            .consume()
            .expect("emptying the capture ring");
        records
    }

    /// (captured, lost), summed over CPUs.
    fn counts(&self) -> (u64, u64) {
        read_per_cpu::<capture_stats>(&self.stats, 0)
            .expect("reading capture_stats")
            .iter()
            .fold((0, 0), |(c, l), s| (c + s.captured, l + s.lost))
    }
}

struct Row {
    program: &'static str,
    mode: Option<Mode>,
    frame: String,
    samples: Summary,
}

pub struct Results {
    rows: Vec<Row>,
    rounds: usize,
    /// Packets per second `meshbpf capture` wrote to a file, per burst.
    stream: Summary,
    stream_lost: u64,
    bursts: usize,
}

pub fn measure(config: &Config) -> Results {
    let frames = [
        filter::Run::from(Packet::Miss, rulesets::miss_source(100)).frame,
        frames::ipv4_udp_of_len("IPv4 UDP", 1514),
    ];
    let floor = crate::raw::empty_program();
    let mut counter_object = std::mem::MaybeUninit::uninit();
    let counter_skel = xdp_counter::load(&mut counter_object, None).expect("loading xdp_counter");
    let counter = Program::counter(&counter_skel);
    let mesh = filter::with_mesh(&rulesets::cidr_rules(100), Program::filter);
    let programs = [counter, mesh];

    let floor_subject = packet::subject("empty XDP program (floor)", floor.as_fd());
    let subjects: Vec<Subject> = programs
        .iter()
        .map(|p| packet::subject(p.name, p.fd.as_fd()))
        .collect();
    // (program index or None for the floor, mode, frame)
    let mut cases: Vec<(Option<usize>, Mode, &Frame)> = Vec::new();
    for frame in &frames {
        cases.push((None, Mode::Off, frame));
        for p in 0..programs.len() {
            for mode in Mode::ALL {
                cases.push((Some(p), mode, frame));
            }
        }
    }
    let run_once = |p: Option<usize>, mode: Mode, frame: &Frame, repeat: u32| -> f64 {
        let subject = p.map_or(&floor_subject, |p| &subjects[p]);
        if let Some(p) = p {
            programs[p].select(mode);
            programs[p].drain();
        }
        let case = Case {
            subject,
            frame,
            verdict: libbpf_sys::XDP_PASS,
        };
        packet::test_run_ns(&case, repeat)
    };
    for &(p, mode, frame) in &cases {
        let Some(p) = p else { continue };
        let before = programs[p].counts();
        run_once(Some(p), mode, frame, REPEAT);
        let after = programs[p].counts();
        let copied = if mode == Mode::SelectsAll {
            u64::from(REPEAT)
        } else {
            0
        };
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (copied, 0),
            "{} with {} on {}: (captured, lost) changed unexpectedly",
            programs[p].name,
            mode.describe(),
            frame.name
        );
    }
    let mut samples: Vec<Vec<f64>> = cases.iter().map(|_| Vec::new()).collect();
    let lost_before: Vec<u64> = programs.iter().map(|p| p.counts().1).collect();
    for round in 0..=config.rounds {
        for i in (0..cases.len()).map(|i| (i + round) % cases.len()) {
            let (p, mode, frame) = cases[i];
            for _ in 0..CALLS {
                let ns = run_once(p, mode, frame, REPEAT);
                if round > 0 {
                    samples[i].push(ns);
                }
            }
        }
    }
    for (p, before) in programs.iter().zip(lost_before) {
        assert_eq!(
            p.counts().1,
            before,
            "{}: the ring buffer lost records while timed",
            p.name
        );
        p.select(Mode::Off);
    }
    let rows = cases
        .iter()
        .zip(samples)
        .map(|(&(p, mode, frame), samples)| Row {
            program: p.map_or("empty XDP program (floor)", |p| programs[p].name),
            mode: p.map(|_| mode),
            frame: frame.name.clone(),
            samples: Summary::of(&samples),
        })
        .collect();
    drop(counter_skel);
    let (stream, stream_lost, bursts) = stream(config.rounds);
    Results {
        rows,
        rounds: config.rounds,
        stream,
        stream_lost,
        bursts,
    }
}

/// Packets per second `meshbpf capture` writes to a file, one sample per
/// burst; what it reported lost; the bursts.
fn stream(bursts: usize) -> (Summary, u64, usize) {
    let pair = VethPair::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("stream.pcapng");
    let frame = &frames::all()[0];
    let (rates, lost) = VethPair::in_netns(&pair.ns, || {
        crate::meshbpf_on(ROOT, &["attach", &pair.dev, "--no-flows"]);
        let prog = meshbpf::kernel::bpfobj::open_pinned(
            &Path::new(ROOT).join(format!("net/{}/xdp_counter/prog", pair.dev)),
        )
        .expect("opening the attached xdp_counter");
        let subject = packet::subject("attached xdp_counter", prog.as_fd());
        let send = |count: u32| {
            let case = Case {
                subject: &subject,
                frame,
                verdict: libbpf_sys::XDP_PASS,
            };
            packet::test_run_ns(&case, count);
        };
        let total = 1 + u64::from(BURST) * bursts as u64;
        let mut capture = spawn_capture(&pair.dev, &file, total);
        let header = wait_for_size(&file, 1, &mut capture);
        send(1);
        let record = wait_for_size(&file, header + 1, &mut capture) - header;
        let mut rates = Vec::new();
        for burst in 1..=bursts as u64 {
            stop(&capture);
            send(BURST);
            let want = header + record * (1 + u64::from(BURST) * burst);
            let started = Instant::now();
            signal(&capture, nix::sys::signal::Signal::SIGCONT);
            wait_for_size(&file, want, &mut capture);
            rates.push(f64::from(BURST) / started.elapsed().as_secs_f64());
        }
        let out = capture.wait_with_output().expect("waiting for the capture");
        assert!(out.status.success(), "meshbpf capture: {out:?}");
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("capture -j prints its summary");
        assert_eq!(summary["packets"], total, "{summary}");
        crate::meshbpf_on(ROOT, &["detach", &pair.dev]);
        (rates, summary["lost"].as_u64().expect("lost"))
    });
    std::fs::remove_dir_all(ROOT).unwrap_or_else(|e| panic!("removing {ROOT}: {e}"));
    (Summary::of(&rates), lost, bursts)
}

fn spawn_capture(dev: &str, file: &Path, count: u64) -> Child {
    Command::new("taskset")
        .args(["-c", &READER_CPU.to_string(), BIN, "--bpffs", ROOT, "-j"])
        .args(["capture", dev, "--count", &count.to_string(), "-w"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning meshbpf capture")
}

/// Waits until `file` holds at least `bytes`; its size then.
fn wait_for_size(file: &Path, bytes: u64, capture: &mut Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size = std::fs::metadata(file).map_or(0, |m| m.len());
        if size >= bytes {
            return size;
        }
        if let Some(status) = capture.try_wait().expect("polling the capture") {
            panic!("meshbpf capture ended ({status}) before writing {bytes} bytes");
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed at {size} bytes, short of {bytes}",
            file.display()
        );
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
        .unwrap_or_else(|e| panic!("sending {signal} to the capture: {e}"));
}

/// Stops the capture and waits until the kernel says it is stopped, so no
/// record of the next burst is read before the clock starts.
fn stop(child: &Child) {
    signal(child, nix::sys::signal::Signal::SIGSTOP);
    let stat = format!("/proc/{}/stat", child.id());
    let stopped = crate::common::wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&stat).ok()?;
        let state = text.rsplit_once(") ")?.1.chars().next()?;
        (state == 'T').then_some(())
    });
    assert!(stopped.is_some(), "the capture did not stop");
}

impl Results {
    pub fn markdown(&self) -> String {
        let floor_of = |frame: &str| {
            self.rows
                .iter()
                .find(|r| r.mode.is_none() && r.frame == frame)
                .expect("a floor row per frame")
                .samples
        };
        let off_of = |program: &str, frame: &str| {
            self.rows
                .iter()
                .find(|r| r.program == program && r.mode == Some(Mode::Off) && r.frame == frame)
                .map(|r| r.samples)
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![
                    r.program.to_string(),
                    r.mode.map_or("-", Mode::describe).to_string(),
                    r.frame.clone(),
                ];
                cells.extend(r.samples.cells(stats::ns));
                cells.extend(r.samples.versus(&floor_of(&r.frame), stats::ns));
                cells.push(match (r.mode, off_of(r.program, &r.frame)) {
                    (Some(Mode::Off) | None, _) | (_, None) => "-".into(),
                    (Some(_), Some(off)) => r.samples.versus(&off, stats::ns)[0].clone(),
                });
                cells
            })
            .collect();
        let range = format!(
            "{}–{}",
            thousands(self.stream.min),
            thousands(self.stream.max)
        );
        format!(
            "## 9. Capture (`meshbpf capture`)\n\n\
Per packet: BPF_PROG_TEST_RUN, {REPEAT} runs a call ({CALLS} calls a round, {} rounds; medians of every call), \
every row interleaved in one run; the ring buffer is emptied before each call, and each row's run was checked \
first: a capture selecting every packet copies every one (captured +{REPEAT}, lost 0), the others copy none. \
xdp_mesh_filter holds section 2's 100 CIDR rules, which these packets miss (they pass by default). \
\"vs no capture\" is the row's median minus the same program's without a capture: what a capture costs a packet.\n\n{}\n\
End to end: the release binary's `meshbpf capture DEV -w FILE` (on CPU {READER_CPU}) on xdp_counter attached to a veth, \
SIGSTOPped while BPF_PROG_TEST_RUN of the attached program fills the ring buffer with {BURST} packets \
(a 64-byte IPv4 UDP frame), then timed from SIGCONT until the file holds them, {} bursts: \
**{} packets/s** written to the file (median; min–max {}), {} lost.\n",
            self.rounds,
            stats::table(
                &["program", "capture", "frame", "median", "min–max", "vs floor", "ratio", "vs no capture"],
                &rows
            ),
            self.bursts,
            thousands(self.stream.median),
            range,
            self.stream_lost,
        )
    }
}

fn thousands(rate: f64) -> String {
    stats::thousands(rate.round() as usize)
}
