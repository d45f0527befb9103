//! Section 2: control-plane latency of the real release binary on a veth in
//! a throwaway namespace, next to xdp-loader, iproute2 and bpftool doing the
//! same jobs on the same interface, and the cost of starting any process.

use std::fs;
use std::mem::MaybeUninit;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use meshbpf::programs::xdp_counter;

use crate::common::{run, VethPair, BIN};
use crate::rulesets;
use crate::stats::{self, Summary};
use crate::Config;

/// One timed action. Commands run from a thread inside the veth's namespace,
/// so no nsenter or `ip netns exec` adds its own start-up to the numbers.
pub struct Step {
    pub operation: &'static str,
    pub what: String,
    /// Whether the action starts a process, so that the floor applies.
    spawns: bool,
    action: Box<dyn Fn() + Send>,
    /// Runs after the timed action, untimed: proof that it did its job.
    check: Option<Box<dyn Fn() + Send>>,
    pub samples: Vec<f64>,
}

impl Step {
    pub fn command(operation: &'static str, argv: Vec<String>) -> Step {
        let what = format!("`{}`", argv.join(" "));
        Step {
            operation,
            what,
            spawns: true,
            action: Box::new(move || {
                let out = run(Command::new(&argv[0]).args(&argv[1..]));
                assert!(
                    out.status.success(),
                    "`{}` failed: {}",
                    argv.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }),
            check: None,
            samples: Vec::new(),
        }
    }

    /// Runs `check` after every timed run of the step.
    pub fn checked(mut self, check: impl Fn() + Send + 'static) -> Step {
        self.check = Some(Box::new(check));
        self
    }

    /// Several sequences detach with the same command: say what goes away.
    fn removing(mut self, object: &Path) -> Step {
        let name = object.file_name().unwrap_or_default().to_string_lossy();
        self.what += &format!(" ({name} attached)");
        self
    }
}

pub fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Steps that must run in order (attach before read before detach); the
/// order between sequences rotates every round.
pub type Sequence = Vec<Step>;

pub struct Results {
    /// The first sequence is the floor.
    sequences: Vec<Sequence>,
    dev: String,
    xdp_tools_dir: String,
    /// Where the rules file was, shown without it.
    rules_dir: String,
}

/// The rule set meshbpf attaches, applies and checks: the largest CIDR set
/// of section 2.
const RULES: usize = rulesets::COUNTS[rulesets::COUNTS.len() - 1];

/// Operations in table order.
const OPERATIONS: [&str; 8] = [
    "process floor",
    "attach",
    "read counters",
    "detach",
    "load only",
    "attach filter",
    "apply rules",
    "check rules",
];

/// What xdp-loader and ip create on bpffs as they go, children first.
const TOOLS_BPFFS_FOOTPRINT: [&str; 5] = [
    "/sys/fs/bpf/ip",
    "/sys/fs/bpf/tc/globals",
    "/sys/fs/bpf/tc",
    "/sys/fs/bpf/xdp/globals",
    "/sys/fs/bpf/xdp",
];

pub fn measure(config: &Config) -> Results {
    leaving_tools_footprint(|| measure_in_netns(config))
}

/// Runs `f`, then removes what of [`TOOLS_BPFFS_FOOTPRINT`] was not there
/// before, so the tools `f` runs leave bpffs as they found it.
pub fn leaving_tools_footprint<T>(f: impl FnOnce() -> T) -> T {
    let absent: Vec<&Path> = TOOLS_BPFFS_FOOTPRINT
        .iter()
        .map(Path::new)
        .filter(|p| p.symlink_metadata().is_err())
        .collect();
    let results = f();
    // remove_dir only takes empty directories, so whatever someone else put
    // there meanwhile stays.
    for path in absent {
        let _ = if path.is_symlink() {
            fs::remove_file(path)
        } else {
            fs::remove_dir(path)
        };
    }
    results
}

fn measure_in_netns(config: &Config) -> Results {
    let pair = VethPair::new();
    let dev = pair.dev.clone();
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join(format!("cidr-{RULES}.json"));
    fs::write(&rules, rulesets::cidr_rules(RULES)).expect("writing a rules file");
    let mut sequences = sequences(&pair, &rules, config);
    VethPair::in_netns(&pair.ns, || time_rounds(&mut sequences, config.rounds));
    Results {
        sequences,
        dev,
        xdp_tools_dir: config.xdp_tools_dir.display().to_string(),
        rules_dir: rules_dir.path().display().to_string(),
    }
}

/// Runs every sequence once per round after a warm-up round, the order of
/// the sequences rotating; each step's wall time in ms goes to its samples.
pub fn time_rounds(sequences: &mut [Sequence], rounds: usize) {
    // Round 0 warms the page cache, libbpf's BTF parsing paths and bpffs.
    for round in 0..=rounds {
        let n = sequences.len();
        for i in (0..n).map(|i| (i + round) % n) {
            for step in &mut sequences[i] {
                let started = Instant::now();
                (step.action)();
                if round > 0 {
                    step.samples.push(started.elapsed().as_secs_f64() * 1e3);
                }
                if let Some(check) = &step.check {
                    check();
                }
            }
        }
    }
}

fn sequences(pair: &VethPair, rules: &Path, config: &Config) -> Vec<Sequence> {
    let dev = pair.dev.as_str();
    let rules = rules.to_string_lossy();
    let counters = pair.pin_dir().join("xdp_counter/counters");
    let mut all = vec![
        vec![Step::command("process floor", argv(&["true"]))],
        vec![
            Step::command("attach", argv(&[BIN, "attach", dev])),
            Step::command("read counters", argv(&[BIN, "stats", dev, "-j"])),
            Step::command(
                "read counters",
                argv(&[
                    "bpftool",
                    "map",
                    "dump",
                    "pinned",
                    &counters.to_string_lossy(),
                    "-j",
                ]),
            ),
            Step::command("detach", argv(&[BIN, "detach", dev])),
        ],
        vec![Step {
            operation: "load only",
            what: "`xdp_counter::load()` in the bench process (open, CO-RE, verifier; no attach)"
                .into(),
            spawns: false,
            action: Box::new(|| {
                let mut object = MaybeUninit::uninit();
                xdp_counter::load(&mut object, None).expect("loading xdp_counter");
            }),
            check: None,
            samples: Vec::new(),
        }],
        // Applying replaces the rules the attach installed, as an operator
        // changing a live rule set would.
        vec![
            Step::command(
                "attach filter",
                argv(&[BIN, "attach", dev, "--filter", &rules]),
            ),
            Step::command("apply rules", argv(&[BIN, "filter", "apply", dev, &rules])),
            Step::command("detach", argv(&[BIN, "detach", dev]))
                .removing(Path::new("xdp_mesh_filter")),
        ],
        vec![Step::command(
            "check rules",
            argv(&[BIN, "filter", "check", &rules]),
        )],
    ];
    if let Some(object) = &config.xdpdump_object {
        all.push(xdp_loader(dev, object));
        all.push(iproute2(dev, object));
    }
    // Not through ip: iproute2 pins xdp-filter's maps by name under
    // /sys/fs/bpf/xdp/globals, where they would outlive the bench, or be a
    // running xdp-filter's own maps. xdp-loader pins nothing.
    if let Some(object) = &config.xdp_filter_object {
        all.push(xdp_loader(dev, object));
    }
    all
}

fn xdp_loader(dev: &str, object: &Path) -> Sequence {
    vec![
        Step::command(
            "attach",
            argv(&[
                "xdp-loader",
                "load",
                "-m",
                "native",
                dev,
                &object.to_string_lossy(),
            ]),
        ),
        Step::command("detach", argv(&["xdp-loader", "unload", dev, "--all"])).removing(object),
    ]
}

fn iproute2(dev: &str, object: &Path) -> Sequence {
    let obj = object.to_string_lossy();
    vec![
        Step::command(
            "attach",
            argv(&[
                "ip", "link", "set", "dev", dev, "xdpdrv", "obj", &obj, "sec", "xdp",
            ]),
        ),
        Step::command(
            "detach",
            argv(&["ip", "link", "set", "dev", dev, "xdpdrv", "off"]),
        )
        .removing(object),
    ]
}

/// Issue 20's targets: a meshbpf operation, its limit in ms, and the other
/// tool's command that does the nearest job, as a pattern of its row.
const TARGETS: [(&str, &str, f64, &str, &str); 4] = [
    ("attach", "attach", 100.0, "attach", "xdpfilt_alw_all.o"),
    (
        "attach --filter (10,000 CIDRs)",
        "attach filter",
        200.0,
        "attach",
        "xdpfilt_alw_all.o",
    ),
    ("detach", "detach", 25.0, "detach", "xdpdrv off"),
    ("stats -j", "read counters", 2.0, "read counters", "bpftool"),
];

impl Results {
    /// The first meshbpf step of `operation`, and the first other tool's
    /// step of `reference_operation` whose command contains `pattern`.
    fn target_rows(&self) -> Vec<Vec<String>> {
        let steps: Vec<&Step> = self.sequences.iter().flatten().collect();
        let find = |operation: &str, test: &dyn Fn(&Step) -> bool| {
            steps
                .iter()
                .find(|s| s.operation == operation && test(s))
                .map(|s| Summary::of(&s.samples))
        };
        TARGETS
            .iter()
            .filter_map(|&(name, operation, limit, ref_operation, pattern)| {
                let ours = find(operation, &|s| s.what.contains(BIN))?;
                let theirs = find(ref_operation, &|s| {
                    !s.what.contains(BIN) && s.what.contains(pattern)
                });
                let (reference, ratio) = match theirs {
                    Some(t) => (
                        stats::ms(t.median),
                        format!("×{:.2}", ours.median / t.median),
                    ),
                    None => ("not measured".into(), "".into()),
                };
                let met = if ours.median <= limit { "yes" } else { "no" };
                Some(vec![
                    format!("`meshbpf {name}`"),
                    format!("≤ {}", stats::ms(limit)),
                    stats::ms(ours.median),
                    met.into(),
                    format!("`{pattern}`: {reference}"),
                    ratio,
                ])
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let steps: Vec<&Step> = self.sequences.iter().flatten().collect();
        let floor = Summary::of(&steps[0].samples);
        let meshbpf_summary = |operation: &str| {
            steps
                .iter()
                .find(|s| s.operation == operation && s.what.contains(BIN))
                .map(|s| Summary::of(&s.samples))
        };
        let mut rows = Vec::new();
        for operation in OPERATIONS {
            for step in steps.iter().filter(|s| s.operation == operation) {
                let summary = Summary::of(&step.samples);
                let what = step
                    .what
                    .replace(BIN, "meshbpf")
                    .replace(&self.dev, "DEV")
                    .replace(&format!("{}/", self.xdp_tools_dir), "")
                    .replace(&format!("{}/", self.rules_dir), "");
                let mut row = vec![operation.to_string(), what];
                row.extend(summary.cells(stats::ms));
                row.push(if step.spawns {
                    summary.versus(&floor, stats::ms)[0].clone()
                } else {
                    "n/a".into()
                });
                row.push(match meshbpf_summary(operation) {
                    Some(reference) => summary.versus(&reference, stats::ms)[1].clone(),
                    None => "".into(),
                });
                rows.push(row);
            }
        }
        format!(
            "## 3. Control plane (wall time per command)\n\n\
DEV is a fresh veth in its own namespace; every attachment is native XDP. `meshbpf` is `{BIN}` (section 4). \
`attach filter`, `apply rules` and `check rules` use `{file}`: section 2's {rules} CIDR rules, which `apply` replaces \
with themselves, the whole set as one atomic switch. \
The `.o` files ship with xdp-tools in `{dir}`: \
xdpdump_xdp.o is its smallest program (a perf event array and a config); xdpfilt_alw_all.o is xdp-filter's \
complete program (five maps, the largest with 65,536 entries), attached with xdp-loader only, as iproute2 would \
pin its maps under /sys/fs/bpf/xdp/globals for good.\n\n{table}\n\n\
Issue 20's targets, each next to the other tool's nearest job in this same run (the ratio is meshbpf's \
median over the tool's; the machine's load changes both alike):\n\n{targets}",
            dir = self.xdp_tools_dir,
            file = format_args!("cidr-{RULES}.json"),
            rules = stats::thousands(RULES),
            table = stats::table(
                &["operation", "command", "median", "min–max", "minus floor", "ratio to meshbpf"],
                &rows
            ),
            targets = stats::table(
                &["meshbpf", "target", "median", "met", "reference", "ratio to reference"],
                &self.target_rows()
            )
        )
    }
}
