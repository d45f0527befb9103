//! Section 1: the per-packet cost of xdp_counter, timed by the kernel itself
//! (BPF_PROG_TEST_RUN) next to an empty XDP program and xdp-filter's program,
//! with `bpftool prog run` on the same loaded programs as a cross-check. The
//! timing ([`sample`]) serves section 2 as well.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use libbpf_rs::{AsRawLibbpf, Object, ObjectBuilder, Program};
use meshbpf::programs::xdp_counter::traffic;
use meshbpf::programs::xdp_counter::{self, XdpCounterSkel};

use crate::common::run;
use crate::frames::{self, Frame};
use crate::raw;
use crate::stats::{self, Summary};
use crate::{Config, CPU};

/// A loaded program to time.
pub struct Subject<'a> {
    pub name: String,
    fd: BorrowedFd<'a>,
    id: u32,
}

/// One program on one frame, and the verdict every run must return: timing
/// a drop where a pass was meant would compare different paths.
pub struct Case<'a> {
    pub subject: &'a Subject<'a>,
    pub frame: &'a Frame,
    pub verdict: u32,
}

#[derive(Default)]
pub struct Samples {
    test_run: Vec<f64>,
    bpftool: Vec<f64>,
}

impl Samples {
    pub fn test_run(&self) -> Summary {
        Summary::of(&self.test_run)
    }

    pub fn bpftool(&self) -> Summary {
        Summary::of(&self.bpftool)
    }

    /// Median and range through both tools, each against `floor`'s.
    pub fn cells(&self, floor: &Samples) -> Vec<String> {
        let (run, tool) = (self.test_run(), self.bpftool());
        let mut cells = Vec::new();
        cells.extend(run.cells(stats::ns));
        cells.extend(run.versus(&floor.test_run(), stats::ns));
        cells.extend(tool.cells(stats::ns));
        cells.push(tool.versus(&floor.bpftool(), stats::ns)[1].clone());
        cells
    }
}

/// Column headers of [`Samples::cells`].
pub const TIMING_HEADERS: [&str; 7] = [
    "median",
    "min–max",
    "vs floor",
    "ratio",
    "bpftool prog run: median",
    "min–max",
    "ratio",
];

/// A Markdown table of timed rows: each row's own `columns`, then its
/// [`Samples::cells`] against `floor`'s.
pub fn timing_table<'a>(
    columns: &[&str],
    rows: impl Iterator<Item = (Vec<String>, &'a Samples)>,
    floor: &Samples,
) -> String {
    let rows: Vec<Vec<String>> = rows
        .map(|(mut cells, samples)| {
            cells.extend(samples.cells(floor));
            cells
        })
        .collect();
    stats::table(&[columns, &TIMING_HEADERS].concat(), &rows)
}

pub struct Results {
    subjects: Vec<String>,
    frames: Vec<String>,
    /// Indexed [frame][subject].
    samples: Vec<Vec<Samples>>,
    repeat: u32,
    xdp_filter_missing: bool,
}

pub fn measure(config: &Config) -> Results {
    let floor = raw::empty_program();
    let mut object = MaybeUninit::uninit();
    let skel = xdp_counter::load(&mut object, None).expect("loading xdp_counter");
    let xdp_filter = config
        .xdp_filter_object
        .as_deref()
        .map(|path| program_fd(&load_without_pins(path)));
    let frames = frames::all();

    let counter = subject("xdp_counter", skel.progs.xdp_counter.as_fd());
    for frame in &frames {
        check_parse_path(&skel, &counter, frame);
    }
    let mut subjects = vec![subject("empty XDP program (floor)", floor.as_fd()), counter];
    if let Some(fd) = &xdp_filter {
        subjects.push(subject("xdp-filter, no rules", fd.as_fd()));
    }
    let cases: Vec<Case> = frames
        .iter()
        .flat_map(|frame| subjects.iter().map(move |subject| passes(subject, frame)))
        .collect();
    let mut samples = sample(&cases, config.rounds, config).into_iter();
    Results {
        samples: frames
            .iter()
            .map(|_| samples.by_ref().take(subjects.len()).collect())
            .collect(),
        subjects: subjects.iter().map(|s| s.name.clone()).collect(),
        frames: frames.into_iter().map(|f| f.name).collect(),
        repeat: config.repeat,
        xdp_filter_missing: xdp_filter.is_none(),
    }
}

/// The case of a program that must let `frame` through.
pub fn passes<'a>(subject: &'a Subject<'a>, frame: &'a Frame) -> Case<'a> {
    Case {
        subject,
        frame,
        verdict: libbpf_sys::XDP_PASS,
    }
}

/// Every case through both tools, once per round after a warm-up round;
/// returns one `Samples` per case, in order.
pub fn sample(cases: &[Case<'_>], rounds: usize, config: &Config) -> Vec<Samples> {
    // bpftool reads frames from files.
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let path = dir.path().join(format!("frame{i}.bin"));
            std::fs::write(&path, &case.frame.bytes).expect("writing a frame file");
            path
        })
        .collect();
    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    // Round 0 warms caches, the JIT'd code and the CPU's clock; it is not kept.
    for round in 0..=rounds {
        // Rotate who goes first so no case always follows the same one.
        for i in (0..cases.len()).map(|i| (i + round) % cases.len()) {
            let test_run = test_run_ns(&cases[i], config.repeat);
            let bpftool = bpftool_run_ns(&cases[i], &files[i], config.repeat);
            if round > 0 {
                samples[i].test_run.push(test_run);
                samples[i].bpftool.push(bpftool);
            }
        }
    }
    samples
}

/// A loaded program and the frames to time it on, each with the verdict
/// every run must return.
pub struct Timed<'a> {
    pub name: String,
    pub fd: BorrowedFd<'a>,
    pub runs: Vec<(&'a Frame, u32)>,
}

/// [`sample`] of every run of every program; one `Samples` per run, in
/// order.
pub fn sample_each(programs: &[Timed<'_>], rounds: usize, config: &Config) -> Vec<Samples> {
    let subjects: Vec<Subject> = programs
        .iter()
        .map(|p| subject(p.name.clone(), p.fd))
        .collect();
    let cases: Vec<Case> = programs
        .iter()
        .zip(&subjects)
        .flat_map(|(program, subject)| {
            program.runs.iter().map(move |&(frame, verdict)| Case {
                subject,
                frame,
                verdict,
            })
        })
        .collect();
    sample(&cases, rounds, config)
}

pub fn subject(name: impl Into<String>, fd: BorrowedFd<'_>) -> Subject<'_> {
    let id = Program::id_from_fd(fd).expect("reading a program id");
    Subject {
        name: name.into(),
        fd,
        id,
    }
}

/// xdp-filter's maps ask to be pinned by name under /sys/fs/bpf, where they
/// would outlive the bench, or reuse a running xdp-filter's rule maps: load
/// them private instead.
pub fn load_without_pins(path: &Path) -> Object {
    let mut open = ObjectBuilder::default()
        .open_file(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    for map in open.maps_mut() {
        // SAFETY: a NULL pin path is libbpf's "do not pin" and frees the old one.
        let rc = unsafe {
            libbpf_sys::bpf_map__set_pin_path(map.as_libbpf_object().as_ptr(), std::ptr::null())
        };
        assert_eq!(rc, 0, "unpinning map {:?}", map.name());
    }
    open.load()
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The object's only program, as an fd that keeps it and its maps loaded
/// after the object is gone.
pub fn program_fd(object: &Object) -> OwnedFd {
    let prog = object.progs().next().expect("the object has a program");
    prog.as_fd().try_clone_to_owned().expect("dup")
}

/// One run per frame must land in the frame's own counter slots; otherwise
/// the bench would time a parser that gave up early.
fn check_parse_path(skel: &XdpCounterSkel<'_>, counter: &Subject<'_>, frame: &Frame) {
    let slots = || {
        let traffic = traffic::read_counters(&skel.maps.counters).expect("reading counters");
        (
            traffic.l3.get(frame.l3).packets,
            traffic.l4.get(frame.l4).packets,
        )
    };
    let before = slots();
    test_run_ns(&passes(counter, frame), 1);
    let after = slots();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "{}: xdp_counter did not count it as {}/{}",
        frame.name,
        frame.l3,
        frame.l4
    );
}

/// Average ns per run as the kernel measured it. This is the syscall behind
/// libbpf-rs's `ProgramMut::test_run`, called on a bare fd so the empty
/// program (which has no libbpf-rs object) takes exactly the same path.
pub fn test_run_ns(case: &Case<'_>, repeat: u32) -> f64 {
    let (subject, frame) = (case.subject, case.frame);
    // SAFETY: plain data; sz tells libbpf which fields we set.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { mem::zeroed() };
    opts.sz = mem::size_of_val(&opts) as _;
    opts.data_in = frame.bytes.as_ptr().cast();
    opts.data_size_in = frame.bytes.len() as _;
    opts.repeat = repeat as _;
    // SAFETY: data_in outlives the call; no output buffers are given.
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(subject.fd.as_raw_fd(), &mut opts) };
    let what = format!("{} on {}", subject.name, frame.name);
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN of {what}: {}",
        io::Error::from_raw_os_error(-rc)
    );
    assert_verdict(case, opts.retval);
    f64::from(opts.duration)
}

fn assert_verdict(case: &Case<'_>, verdict: u32) {
    assert_eq!(
        verdict, case.verdict,
        "{} on {}: verdict {verdict} instead of {}",
        case.subject.name, case.frame.name, case.verdict
    );
}

/// The same measurement through the established tool, pinned to the same CPU
/// (already inherited from the bench; explicit so the command is what NOTES
/// and a reader would type).
fn bpftool_run_ns(case: &Case<'_>, frame_file: &Path, repeat: u32) -> f64 {
    let out = run(Command::new("taskset")
        .args([
            "-c",
            &CPU.to_string(),
            "bpftool",
            "prog",
            "run",
            "id",
            &case.subject.id.to_string(),
            "data_in",
        ])
        .arg(frame_file)
        .args(["repeat", &repeat.to_string()]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "Return value: 2, duration (average): 24ns"
    let field = |name: &str, suffix: &str| {
        stdout
            .split(name)
            .nth(1)
            .and_then(|rest| rest.split(suffix).next())
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "bpftool prog run printed no {name:?}: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    assert_verdict(case, field("Return value:", ","));
    f64::from(field("duration (average):", "ns"))
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut rows = Vec::new();
        for (frame, per_subject) in self.frames.iter().zip(&self.samples) {
            for (name, samples) in self.subjects.iter().zip(per_subject) {
                let mut row = vec![frame.clone(), name.clone()];
                row.extend(samples.cells(&per_subject[0]));
                rows.push(row);
            }
        }
        format!(
            "## 1. Per-packet cost (BPF_PROG_TEST_RUN, {repeat} runs per sample)\n\n\
Kernel-timed average per run; every program returns XDP_PASS.{note}\n\n{table}",
            repeat = self.repeat,
            note = if self.xdp_filter_missing {
                " xdp-tools is not installed, so xdp-filter's program is missing from this run."
            } else {
                ""
            },
            table = stats::table(
                &[&["frame", "program"][..], &TIMING_HEADERS].concat(),
                &rows
            )
        )
    }
}
