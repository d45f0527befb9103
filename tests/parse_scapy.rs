//! xdp_counter's l3/l4 classes against an oracle that shares no code with
//! meshbpf: tests/scapy/frames.py builds crafted and randomised frames with
//! scapy and gives each the classes README.md's rules give it
//! (tests/scapy/oracle.py), and every frame goes through xdp_counter under
//! BPF_PROG_TEST_RUN, which must move exactly those two counters.
//!
//! The seed is fixed so a failure replays; MESHBPF_SCAPY_SEED picks another
//! one to explore. Needs root, and python3-scapy (`make deps`).

mod common;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::Path;
use std::process::{Command, Stdio};

use common::xdp_counter::{Harness, L3, L4};
use serde::Deserialize;

const SEED: u64 = 17;
/// A few thousand frames: about three seconds, nearly all of it scapy's.
const COUNT: usize = 2500;
/// Debian's interpreter, the one python3-scapy installs for: a python3
/// earlier in PATH (pyenv, a venv) may not have scapy.
const PYTHON: &str = "/usr/bin/python3";
/// Enough that a broken parser layer shows its pattern, short enough to read.
const SHOWN: usize = 20;

/// One line of frames.py's output; `proto` and `ports` are for the filter,
/// which this test leaves out.
#[derive(Deserialize)]
struct Case {
    hex: String,
    summary: String,
    l3: String,
    l4: String,
}

fn seed() -> u64 {
    match std::env::var("MESHBPF_SCAPY_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("MESHBPF_SCAPY_SEED={s:?} is not a number")),
        Err(_) => SEED,
    }
}

fn generate(seed: u64, count: usize) -> Vec<Case> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scapy/frames.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args(["--seed", &seed.to_string(), "--count", &count.to_string()])
        // No __pycache__ left in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {PYTHON} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); is python3-scapy installed? (`make deps`)",
        script.display(),
        out.status
    );
    let cases: Vec<Case> = String::from_utf8(out.stdout)
        .expect("frames.py prints UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(cases.len(), count, "frames.py printed one line per frame");
    cases
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}: {hex}")))
        .collect()
}

/// A corpus that never reaches a class cannot catch that class going
/// wrong, so each one must be expected often enough to matter.
fn assert_covers_every_class(cases: &[Case]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for case in cases {
        *seen.entry(format!("l3.{}", case.l3)).or_default() += 1;
        *seen.entry(format!("l4.{}", case.l4)).or_default() += 1;
    }
    let classes = L3.iter().map(|c| format!("l3.{c}"));
    let classes = classes.chain(L4.iter().map(|c| format!("l4.{c}")));
    for class in classes {
        let n = seen.get(&class).copied().unwrap_or(0);
        assert!(n >= 20, "only {n} frames expected as {class}: {seen:?}");
    }
}

privileged_test!(
    fn every_frame_moves_the_counters_readme_and_scapy_expect() {
        let seed = seed();
        eprintln!("scapy frames: seed {seed}, {COUNT} frames (MESHBPF_SCAPY_SEED to change)");
        let cases = generate(seed, COUNT);
        assert_covers_every_class(&cases);
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let mismatches: Vec<String> = cases
            .iter()
            .enumerate()
            .filter_map(|(i, case)| {
                h.check_counted(&unhex(&case.hex), 1, &case.l3, &case.l4)
                    .err()
                    .map(|e| format!("frame {i} ({}): {e}", case.summary))
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "seed {seed}: {} of {COUNT} frames disagree with the oracle (first {SHOWN}):\n{}",
            mismatches.len(),
            mismatches[..mismatches.len().min(SHOWN)].join("\n")
        );
    }
);
