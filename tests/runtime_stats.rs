//! Program run counts and run time in `stats`, against real traffic: a
//! `--sample` window enables the kernel's run-time statistics for itself
//! only, and what it counts matches the veth's own counters exactly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{PinRoot, Ran, VethPair, ADDR, BIN};
use serde_json::Value;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

fn program<'a>(stats: &'a Value, hook: &str) -> &'a Value {
    stats["runtime"]["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["hook"] == hook))
        .unwrap_or_else(|| panic!("no {hook} program in {stats}"))
}

/// Starts `stats --sample` (with -v) and returns once its window has
/// begun: when the first reading is taken and logged.
fn start_sample(command: &mut Command) -> Child {
    let mut sampling = command
        .arg("-v")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(sampling.stderr.take().unwrap()).lines();
    let begun = log
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("sampling"));
    if !begun {
        let ended = Ran::from(sampling.wait_with_output().unwrap());
        panic!("stats ended before its window began: {ended:?}");
    }
    // Keep reading, so that the command never writes to a closed pipe.
    std::thread::spawn(move || log.for_each(drop));
    sampling
}

privileged_test!(
    fn a_sample_counts_every_run_exactly_and_leaves_the_sysctl_alone() {
        let sysctl_before = std::fs::read_to_string(STATS_SYSCTL).unwrap();
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev]).ok();

        let sampling = start_sample(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", net.ns))
                .arg("--")
                .arg(BIN)
                .args(["stats", &net.dev, "--sample", "3", "-j"]),
        );
        let (rx_before, _) = net.link_stats("rx");
        let (tx_before, _) = net.link_stats("tx");
        let datagrams = 40;
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), datagrams, 64);
        common::wait_for(Duration::from_secs(2), || {
            (net.link_stats("rx").0 >= rx_before + datagrams as u64).then_some(())
        })
        .expect("the datagrams arrived");
        let (rx_after, _) = net.link_stats("rx");
        let (tx_after, _) = net.link_stats("tx");

        let ran = Ran::from(sampling.wait_with_output().unwrap()).ok();
        let stats = ran.json();
        assert_eq!(
            rx_after - rx_before,
            datagrams as u64,
            "nothing else arrived"
        );
        let window = stats["runtime"]["sampled_ns"].as_u64().unwrap();
        assert!((3_000_000_000..4_000_000_000).contains(&window), "{stats}");

        let xdp = program(&stats, "xdp");
        assert_eq!(xdp["program"], "xdp_counter");
        assert_eq!(xdp["prog_id"], stats["prog_id"]);
        assert_eq!(xdp["run_cnt"], rx_after - rx_before, "{stats}");
        let time = xdp["run_time_ns"].as_u64().unwrap();
        assert!(time > 0, "{stats}");
        assert_eq!(xdp["avg_run_time_ns"], time / datagrams as u64);
        // Every frame that passed XDP went through tc ingress, and every frame
        // sent (the kernel's ICMP port-unreachable replies) through tc egress.
        assert_eq!(
            program(&stats, "tc_ingress")["run_cnt"],
            rx_after - rx_before
        );
        assert_eq!(
            program(&stats, "tc_egress")["run_cnt"],
            tx_after - tx_before
        );

        assert_eq!(
            std::fs::read_to_string(STATS_SYSCTL).unwrap(),
            sysctl_before,
            "kernel.bpf_stats_enabled is untouched"
        );

        // Without --sample: the kernel's totals, which include the window.
        let totals = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(totals["runtime"]["sampled_ns"], Value::Null);
        assert!(
            program(&totals, "xdp")["run_cnt"].as_u64().unwrap() >= datagrams as u64,
            "{totals}"
        );
        let table = net.meshbpf(&["stats", &net.dev]).ok();
        assert!(
            table.stdout.contains("run time since load")
                && table.stdout.contains("xdp_counter (xdp, prog"),
            "{table:?}"
        );
    }
);

privileged_test!(
    fn ctrl_c_ends_a_sample_with_exit_130() {
        let root = format!("/sys/fs/bpf/mbrt{}", std::process::id());
        let sampling =
            start_sample(Command::new(BIN).args(["stats", "--sample", "30", "--bpffs", &root]));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sampling.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let ran = Ran::from(sampling.wait_with_output().unwrap());
        assert_eq!(ran.code, 130, "{ran:?}");
        assert!(ran.stdout.is_empty(), "{ran:?}");
    }
);

privileged_test!(
    /// The host-wide attachments are meshbpf's too: `list` shows their
    /// programs, links and maps, and `stats --sample` counts their runs.
    fn host_wide_attachments_are_listed_and_sampled() {
        let root = PinRoot::new();
        root.meshbpf(&["attach", "--latency", "--syscalls", "getpid"])
            .ok();
        let host = |all: &Value| {
            all.as_array()
                .and_then(|a| a.iter().find(|o| o["program"] == "syscall_latency"))
                .cloned()
                .unwrap_or_else(|| panic!("no syscall_latency in {all}"))
        };
        let stats = host(&root.meshbpf(&["stats", "-j"]).ok().json());
        let ids = |v: &Value| -> Vec<u64> {
            let mut ids: Vec<u64> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap())
                .collect();
            ids.sort_unstable();
            ids
        };

        let listed = root.meshbpf(&["list", "-j"]).ok().json();
        let object = listed
            .as_array()
            .and_then(|a| a.iter().find(|o| o["name"] == "syscall_latency"))
            .unwrap_or_else(|| panic!("list leaves syscall_latency out: {listed}"));
        assert_eq!(object["kind"], "host", "{object}");
        assert!(object.get("interface").is_none(), "{object}");
        let programs = object["programs"].as_array().unwrap();
        let prog_ids: Vec<Value> = programs.iter().map(|p| p["prog_id"].clone()).collect();
        assert_eq!(ids(&Value::from(prog_ids)), ids(&stats["prog_ids"]));
        let link_ids: Vec<Value> = programs
            .iter()
            .flat_map(|p| p["attachments"].as_array().unwrap().clone())
            .map(|a| a["link_id"].clone())
            .collect();
        assert_eq!(ids(&Value::from(link_ids)), ids(&stats["link_ids"]));
        assert!(
            object["maps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "hists"),
            "{object}"
        );

        let calls = 20_000;
        let child = common::held_python(&format!("for _ in range({calls}): os.getpid()"));
        let sampling =
            start_sample(Command::new(BIN).args(root.args(&["stats", "--sample", "2", "-j"])));
        common::release(child);
        let sampled = host(&Ran::from(sampling.wait_with_output().unwrap()).ok().json());
        let runtime = &sampled["runtime"];
        assert!(runtime["sampled_ns"].as_u64().unwrap() >= 2_000_000_000);
        let runs = runtime["programs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{runtime}");
        for program in runs {
            // Both run on every syscall of the host: at least the child's.
            assert!(program["run_cnt"].as_u64().unwrap() >= calls, "{runtime}");
        }
    }
);
