//! VM only (listed in tests/vm/tests, `test = false` in Cargo.toml): the hooks
//! this host's kernel refuses (kprobes are not compiled in, trampolines and
//! BPF LSM loads fail with EPERM) load, attach through libbpf-rs and count a
//! function driven a known number of times, exactly.

mod common;

use std::fs::File;
use std::sync::OnceLock;

use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder, ProgramMut};

const CALLS: u64 = 1000;

/// The kernel function behind getpgid(2) on x86_64, in the BTF of 6.1, 6.12
/// and 6.18 (`__x64_sys_getppid` is not): each getpgid call is one call of it.
const GETPGID: &str = "__x64_sys_getpgid";

/// The fixture, loaded with its fentry and fexit programs aimed at `function`.
/// Tests share one load (compiling and verifying is slow under emulation):
/// counts are per thread and each test compares before and after.
struct CallCounter {
    obj: Object,
}

impl CallCounter {
    fn shared() -> &'static Self {
        static LOADED: OnceLock<CallCounter> = OnceLock::new();
        LOADED.get_or_init(|| Self::load(GETPGID))
    }

    fn load(function: &str) -> Self {
        let (_dir, path) = common::compile_fixture("call_counter");
        let mut open = ObjectBuilder::default()
            .open_file(&path)
            .expect("opening call_counter.bpf.o");
        for mut prog in open.progs_mut() {
            if ["on_fentry", "on_fexit"].contains(&prog.name().to_str().unwrap()) {
                prog.set_attach_target(0, Some(function.to_string()))
                    .unwrap_or_else(|e| {
                        panic!(
                            "aiming {:?} at kernel function {function} (it must be in the kernel's BTF): {e}",
                            prog.name()
                        )
                    });
            }
        }
        let obj = open.load().expect("loading call_counter.bpf.o");
        CallCounter { obj }
    }

    fn program(&self, name: &str) -> ProgramMut<'_> {
        self.obj
            .progs_mut()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("no program {name}"))
    }

    /// Calls the calling thread made that `map`'s hook saw.
    fn calls(&self, map: &str) -> u64 {
        let map = self
            .obj
            .maps()
            .find(|m| m.name() == map)
            .unwrap_or_else(|| panic!("no map {map}"));
        let tid = nix::unistd::gettid().as_raw() as u32;
        map.lookup(&tid.to_ne_bytes(), MapFlags::ANY)
            .expect("map lookup")
            .map_or(0, |v| u64::from_ne_bytes(v.try_into().expect("u64 value")))
    }
}

/// Attaches the programs of `hooks`, runs `drive` `CALLS` times and asserts
/// that each hook's map counted exactly `CALLS` calls from this thread.
fn assert_counts(hooks: &[(&str, &str)], drive: impl Fn()) {
    let counter = CallCounter::shared();
    let _links: Vec<Link> = hooks
        .iter()
        .map(|(prog, _)| attach(&counter.program(prog)))
        .collect();
    let before: Vec<u64> = hooks.iter().map(|(_, map)| counter.calls(map)).collect();
    for _ in 0..CALLS {
        drive();
    }
    for ((prog, map), before) in hooks.iter().zip(before) {
        assert_eq!(counter.calls(map) - before, CALLS, "{prog}");
    }
}

fn attach(prog: &ProgramMut) -> Link {
    let name = prog.name().to_str().unwrap();
    match name {
        "on_kprobe" => prog.attach_kprobe(false, GETPGID),
        "on_kretprobe" => prog.attach_kprobe(true, GETPGID),
        "on_file_open" => prog.attach_lsm(),
        _ => prog.attach_trace(),
    }
    .unwrap_or_else(|e| panic!("attaching {name}: {e}"))
}

fn getpgid() {
    // SAFETY: plain syscall on the calling process.
    assert!(unsafe { libc::getpgid(0) } >= 0, "getpgid(0)");
}

privileged_test!(
    fn kprobe_and_kretprobe_count_every_call() {
        assert_counts(
            &[
                ("on_kprobe", "kprobe_calls"),
                ("on_kretprobe", "kretprobe_calls"),
            ],
            getpgid,
        );
    }
);

privileged_test!(
    fn fentry_and_fexit_count_every_call() {
        assert_counts(
            &[("on_fentry", "fentry_calls"), ("on_fexit", "fexit_calls")],
            getpgid,
        );
    }
);

privileged_test!(
    fn lsm_file_open_counts_every_open() {
        assert_counts(&[("on_file_open", "file_open_calls")], || {
            File::open("/dev/null").expect("opening /dev/null");
        });
    }
);
