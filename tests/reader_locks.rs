//! Readers take the shared lock only to read: one whose output nobody reads
//! (`meshbpf filter show eth0 | less`, the pager not yet scrolled) must not
//! hold up attach, detach, `filter apply` or `health --fix`.

mod common;

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{PinRoot, VethPair, ADDR, BIN, PEER_ADDR};
use nix::fcntl::{fcntl, FcntlArg};

/// How long a change may take while a reader is stalled: it is instant
/// without one, and waits for ever behind a reader holding the lock.
const PATIENCE: Duration = Duration::from_secs(15);

/// A veth pair with meshbpf attached under a pin root of its own, plus
/// `extra` more veth pairs in the same namespace, all attached: enough
/// attachments that `stats` and `list` print more than a pipe holds.
struct Attached {
    // Dropped first: the interfaces go, then their pins.
    net: VethPair,
    root: PinRoot,
    extra: Vec<String>,
}

impl Attached {
    fn new(extra: usize) -> Attached {
        let root = PinRoot::new();
        let net = VethPair::new();
        let names: Vec<String> = (0..extra).map(|i| format!("{}x{i}", net.dev)).collect();
        for name in &names {
            common::must(&format!(
                "ip -n {ns} link add {name} type veth peer name {name}p && ip -n {ns} link set {name} up && ip -n {ns} link set {name}p up",
                ns = net.ns
            ));
        }
        let attached = Attached {
            net,
            root,
            extra: names,
        };
        attached.meshbpf(&["attach", &attached.net.dev]).ok();
        for name in &attached.extra {
            attached.meshbpf(&["attach", name]).ok();
        }
        attached
    }

    /// The real binary in the namespace, on this pin root.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.net.ns))
            .arg("--")
            .arg(BIN)
            .args(self.root.args(args));
        cmd
    }

    fn meshbpf(&self, args: &[&str]) -> common::Ran {
        common::Ran::from(common::run(&mut self.command(args)))
    }

    /// Starts `args` with its stdout a one-page pipe that nobody reads, and
    /// waits until it is blocked writing to it.
    fn stalled(&self, args: &[&str]) -> Stalled {
        let (read, write) = nix::unistd::pipe().expect("a pipe");
        // The smallest pipe the kernel allows: a few KiB of output fill it.
        fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(4096)).expect("shrinking the pipe");
        // nsenter execs meshbpf: the child's pid is meshbpf's.
        let child = self
            .command(args)
            .stdout(Stdio::from(write))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the reader");
        let wchan = format!("/proc/{}/wchan", child.id());
        let mut stalled = Stalled {
            child,
            _unread: read,
        };
        let blocked = common::wait_for(Duration::from_secs(30), || {
            let at = std::fs::read_to_string(&wchan).unwrap_or_default();
            at.contains("pipe_write").then_some(())
        });
        if blocked.is_none() {
            let status = stalled.child.try_wait().unwrap();
            panic!("meshbpf {args:?} never blocked on its full stdout (exited: {status:?})");
        }
        stalled
    }

    /// Runs `args` while `reader` is stalled; it must finish within
    /// PATIENCE and succeed.
    fn finishes(&self, reader: &Stalled, args: &[&str]) -> common::Ran {
        let mut change = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the change");
        let done = common::wait_for(PATIENCE, || change.try_wait().unwrap());
        if done.is_none() {
            let _ = change.kill();
            let _ = change.wait();
            panic!(
                "meshbpf {args:?} waited more than {PATIENCE:?} for a reader stalled on its output (pid {})",
                reader.child.id()
            );
        }
        common::Ran::from(change.wait_with_output().unwrap()).ok()
    }
}

/// A reader whose output nobody reads; killed on drop.
struct Stalled {
    child: Child,
    _unread: OwnedFd,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rules file of `count` deny rules (a /32 each) under a temp dir.
fn rules(count: u32) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.json");
    let rules: Vec<serde_json::Value> = (0..count)
        .map(|i| serde_json::json!({"action": "deny", "src": format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255)}))
        .collect();
    let file = serde_json::json!({"default": "allow", "rules": rules});
    serde_json::to_writer(File::create(&path).unwrap(), &file).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

privileged_test!(
    fn filter_show_of_10000_rules_stalled_on_its_output_holds_up_no_change() {
        let lab = Attached::new(0);
        let dev = lab.net.dev.clone();
        let (_big, big) = rules(10_000);
        lab.meshbpf(&["attach", &dev, "--filter", &big]).ok();
        let (_small, small) = rules(3);
        {
            let reader = lab.stalled(&["filter", "show", &dev]);
            lab.finishes(&reader, &["filter", "apply", &dev, &small]);
        }
        lab.meshbpf(&["filter", "apply", &dev, &big]).ok();
        let reader = lab.stalled(&["filter", "show", &dev, "-j"]);
        let detached = lab.finishes(&reader, &["detach", &dev, "-j"]).json();
        assert_eq!(detached["interface"], dev.as_str(), "{detached}");
    }
);

privileged_test!(
    fn stats_stalled_on_its_output_holds_up_no_change() {
        let lab = Attached::new(3);
        for args in [&["stats", "-p"][..], &["stats", "--sample", "0.1", "-p"]] {
            let reader = lab.stalled(args);
            lab.finishes(&reader, &["detach", &lab.extra[1]]);
            drop(reader);
            lab.meshbpf(&["attach", &lab.extra[1]]).ok();
        }
    }
);

privileged_test!(
    fn list_stalled_on_its_output_holds_up_no_change() {
        let lab = Attached::new(1);
        let reader = lab.stalled(&["list"]);
        lab.finishes(&reader, &["detach", &lab.extra[0]]);
        lab.finishes(&reader, &["attach", &lab.extra[0]]);
        lab.finishes(&reader, &["health", "--fix", "-j"]);
    }
);

privileged_test!(
    fn flows_stalled_on_its_output_holds_up_no_change() {
        let lab = Attached::new(1);
        let sources = 100;
        VethPair::in_netns(&lab.net.peer_ns, || {
            for _ in 0..sources {
                let socket = UdpSocket::bind((PEER_ADDR, 0)).unwrap();
                socket.send_to(b"flow", (ADDR, 9)).unwrap();
            }
        });
        let dev = lab.net.dev.clone();
        common::wait_for(Duration::from_secs(5), || {
            let flows = lab.meshbpf(&["flows", &dev, "-j"]).ok().json();
            (flows.as_array()?.len() >= sources).then_some(())
        })
        .expect("the flows were never in the table");
        for args in [&["flows", &dev][..], &["flows", &dev, "--follow", "-j"]] {
            let reader = lab.stalled(args);
            lab.finishes(&reader, &["detach", &lab.extra[0]]);
            drop(reader);
            lab.meshbpf(&["attach", &lab.extra[0]]).ok();
        }
    }
);
