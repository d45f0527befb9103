//! `meshbpf events` against lsm_monitor's tracepoint fallback, the method
//! this kernel runs (it refuses BPF LSM programs): exec and open events with
//! exact fields, the --type and --pid filters, --follow with Ctrl-C, one
//! reader at a time, and a flood whose every event is delivered or counted
//! as lost. Each test attaches its own monitor in its own pin root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use common::monitor::Monitor;
use common::{must, PinRoot};

/// Runs `program ARGS` to its end; its pid.
fn run_child(program: &Path, args: &[&Path]) -> u32 {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

fn cat(file: &Path) -> u32 {
    run_child(Path::new("/bin/cat"), &[file])
}

fn pids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["pid"].as_u64().unwrap()).collect()
}

#[test]
fn bad_type_lists_are_usage_errors_that_name_the_value() {
    let ran = common::meshbpf(&["events", "--type", "exec,opens"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr
            .contains("'opens' is not an event type (valid: exec, open, ptrace, capable, module)"),
        "{ran:?}"
    );
}

privileged_test!(
    fn events_without_a_monitor_say_how_to_start_one() {
        let root = PinRoot::new();
        let ran = root.meshbpf(&["events", "-j"]);
        assert_eq!(ran.code, 1, "{ran:?}");
        let error = ran.json();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .starts_with("lsm_monitor is not attached"),
            "{error}"
        );
        assert_eq!(
            error["hint"],
            "start it with `meshbpf attach --lsm` (--policy FILE to watch paths)"
        );
    }
);

privileged_test!(
    fn each_exec_of_a_known_binary_appears_once_with_its_path_and_pid() {
        let monitor = Monitor::attach();
        let bin_dir = tempfile::tempdir().unwrap();
        let name = format!("mbtrue{}", std::process::id());
        let binary = bin_dir.path().join(&name);
        must(&format!("install -m 0755 /bin/true {}", binary.display()));
        let ran: Vec<u64> = (0..5).map(|_| run_child(&binary, &[]) as u64).collect();

        let (events, summary) = monitor.events(&["--type", "exec"]);
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["path"] == binary.to_str().unwrap())
            .collect();
        assert_eq!(
            mine.iter()
                .map(|e| e["pid"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            ran
        );
        for event in &mine {
            assert_eq!(event["type"], "exec");
            assert_eq!(event["method"], "tracepoint");
            assert_eq!(event["hook"], "sched_process_exec");
            assert_eq!(event["verdict"], "allowed");
            assert_eq!(event["uid"], 0);
            assert_eq!(event["ppid"], std::process::id());
            assert_eq!(event["comm"], name.as_str());
            assert_eq!(event.get("truncated"), None);
            assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
        }
        assert!(events.iter().all(|e| e["type"] == "exec"));
        assert!(summary["delivered"].as_u64().unwrap() >= 5, "{summary}");
    }
);

privileged_test!(
    fn opens_in_a_watched_directory_say_how_the_file_was_opened() {
        let monitor = Monitor::attach();
        let file = monitor.path("written");
        std::fs::write(&file, b"x").unwrap();
        std::fs::read(&file).unwrap();

        let me = std::process::id().to_string();
        let (events, _) = monitor.events(&["--type", "open", "--pid", &me]);
        assert_eq!(events.len(), 2, "{events:?}");
        let (write, read) = (&events[0], &events[1]);
        for event in [write, read] {
            assert_eq!(event["path"], file.to_str().unwrap());
            assert_eq!(event["method"], "tracepoint");
            assert_eq!(event["hook"], "sys_exit");
            assert_eq!(event["verdict"], "allowed");
            assert_eq!(event["result"], "ok");
        }
        assert_eq!(
            write["flags"],
            serde_json::json!(["O_WRONLY", "O_CREAT", "O_TRUNC", "O_CLOEXEC"])
        );
        assert_eq!(write["access"], "write");
        assert_eq!(read["flags"], serde_json::json!(["O_RDONLY", "O_CLOEXEC"]));
        assert_eq!(read["access"], "read");
    }
);

privileged_test!(
    fn the_table_shows_each_event_and_the_summary_under_it() {
        let monitor = Monitor::attach();
        let file = monitor.path("shown");
        std::fs::write(&file, b"x").unwrap();
        let pid = cat(&file);

        let ran = monitor
            .root
            .meshbpf(&["events", "--type", "open", "--pid", &pid.to_string()])
            .ok();
        let lines: Vec<&str> = ran.stdout.lines().collect();
        let row = format!("{} (read: O_RDONLY)", file.display());
        assert_eq!(
            lines.iter().filter(|l| l.contains(&row)).count(),
            1,
            "{}",
            ran.stdout
        );
        assert!(
            lines[1].contains("type") && lines[1].contains("verdict"),
            "{}",
            ran.stdout
        );
        let summary = lines.last().unwrap();
        assert!(
            summary.ends_with(" events read; 0 lost since attach (ring buffer full)"),
            "{summary}"
        );
    }
);

privileged_test!(
    fn type_and_pid_filters_keep_exactly_what_they_name() {
        let monitor = Monitor::attach();
        let file = monitor.path("read");
        std::fs::write(&file, b"x").unwrap();

        let first = cat(&file);
        let other = cat(&file);
        let (events, summary) = monitor.events(&["--type", "open", "--pid", &first.to_string()]);
        assert_eq!(pids(&events), [first as u64]);
        assert_eq!(events[0]["type"], "open");
        assert_eq!(events[0]["comm"], "cat");
        // Read, though filtered out: both cats' execs and opens at least.
        assert!(summary["delivered"].as_u64().unwrap() >= 4, "{summary}");
        assert_ne!(first, other);

        let pid = cat(&file);
        let (events, _) = monitor.events(&["--pid", &pid.to_string()]);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["exec", "open"], "{events:?}");
        assert_eq!(pids(&events), [pid as u64, pid as u64]);

        let pid = cat(&file);
        let (events, _) = monitor.events(&["--type", "exec", "--pid", &pid.to_string()]);
        assert_eq!(pids(&events), [pid as u64]);
        assert_eq!(events[0]["path"], "/bin/cat");
    }
);

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first event of process `pid` among the streamed lines, within 10 s.
fn streamed_event_of(lines: &mpsc::Receiver<String>, pid: u32) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event: Value = serde_json::from_str(&lines.recv_timeout(left).ok()?).unwrap();
        if event["pid"] == pid {
            return Some(event);
        }
    }
}

privileged_test!(
    fn follow_streams_keeps_others_out_and_ends_on_ctrl_c_with_a_summary() {
        let monitor = Monitor::attach();
        let file = monitor.path("followed");
        std::fs::write(&file, b"x").unwrap();
        let mut follow = monitor.spawn_events(&["events", "-j", "--follow", "--type", "open"]);
        let lines = lines_of(&mut follow);

        let mut seen = Vec::new();
        for round in 0..3 {
            let pid = cat(&file);
            let event = streamed_event_of(&lines, pid)
                .unwrap_or_else(|| panic!("no open of pid {pid} streamed (round {round})"));
            assert_eq!(event["path"], file.to_str().unwrap());
            seen.push(pid);
        }

        let second = monitor.root.meshbpf(&["events", "-j"]);
        assert_eq!(second.code, 1, "{second:?}");
        assert!(
            second.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("another `meshbpf events` is reading "),
            "{second:?}"
        );

        kill(Pid::from_raw(follow.id() as i32), Signal::SIGINT).unwrap();
        let status = follow.wait().unwrap();
        assert_eq!(status.code(), Some(130));
        let rest: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        let summary = rest.last().expect("a summary after Ctrl-C");
        assert_eq!(summary["type"], "summary", "{rest:?}");
        assert!(summary["delivered"].as_u64().unwrap() >= 3, "{summary}");
        assert_eq!(summary["lost"], 0);
        assert_eq!(seen.len(), 3);
    }
);

privileged_test!(
    fn follow_ends_with_the_summary_when_the_monitor_is_detached() {
        let monitor = Monitor::attach();
        let file = monitor.path("last");
        std::fs::write(&file, b"x").unwrap();
        let mut follow = monitor.spawn_events(&["events", "-j", "--follow", "--type", "open"]);
        let lines = lines_of(&mut follow);
        let first = cat(&file);
        streamed_event_of(&lines, first).expect("the first open streamed");
        let pid = cat(&file);
        monitor.root.meshbpf(&["detach", "--lsm"]).ok();
        let ended = common::wait_for(Duration::from_secs(10), || follow.try_wait().unwrap());
        assert_eq!(ended.expect("follow ended").code(), Some(0));
        let all: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        // The open just before the detach is read, then the summary ends the
        // stream.
        assert!(all.iter().any(|e| e["pid"] == pid), "{all:?}");
        assert_eq!(all.last().unwrap()["type"], "summary", "{all:?}");
    }
);

/// python3 opening `file` read-only `count` times; its pid once it ended,
/// within `timeout` (a full ring buffer must never hold it up).
fn flood(file: &Path, count: u64, timeout: Duration) -> u32 {
    let script = format!(
        "import os\nfor _ in range({count}):\n    os.close(os.open({:?}, os.O_RDONLY))\n",
        file.to_str().unwrap()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .expect("python3");
    let finished = common::wait_for(timeout, || {
        child.try_wait().unwrap().map(|status| status.success())
    });
    assert_eq!(
        finished,
        Some(true),
        "{count} opens did not finish in {timeout:?}"
    );
    child.id()
}

privileged_test!(
    fn follow_reports_losses_as_they_happen_and_every_open_adds_up() {
        const OPENS: u64 = 20_000;
        let monitor = Monitor::attach();
        let file = monitor.path("lossy");
        std::fs::write(&file, b"x").unwrap();
        let mut follow = monitor.spawn_events(&["events", "-j", "--follow", "--type", "open"]);
        let lines = lines_of(&mut follow);
        let first = cat(&file);
        streamed_event_of(&lines, first).expect("the reader runs");

        // A stopped reader reads nothing: the buffer fills and the rest is lost.
        let reader = Pid::from_raw(follow.id() as i32);
        kill(reader, Signal::SIGSTOP).unwrap();
        let pid = flood(&file, OPENS, Duration::from_secs(60));
        kill(reader, Signal::SIGCONT).unwrap();

        let mut streamed: Vec<Value> = Vec::new();
        while streamed.last().is_none_or(|e| e["type"] != "lost") {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("a lost line");
            streamed.push(serde_json::from_str(&line).unwrap());
        }
        kill(reader, Signal::SIGINT).unwrap();
        assert_eq!(follow.wait().unwrap().code(), Some(130));
        streamed.extend(lines.iter().map(|l| serde_json::from_str(&l).unwrap()));
        let summary = streamed.pop().expect("a summary");
        assert_eq!(summary["type"], "summary", "{summary}");

        // Execs elsewhere on the host may be lost too while the buffer is full:
        // the lost lines count every type, the summary each.
        let lost_lines: u64 = streamed
            .iter()
            .filter(|e| e["type"] == "lost")
            .map(|e| e["lost"].as_u64().unwrap())
            .sum();
        assert_eq!(lost_lines, summary["lost"].as_u64().unwrap(), "{summary}");
        let lost = summary["lost_by_type"]["open"].as_u64().unwrap();
        assert!(lost > 0, "{summary}");
        let delivered = streamed.iter().filter(|e| e["pid"] == pid).count() as u64;
        assert_eq!(delivered + lost, OPENS, "{summary}");
    }
);

privileged_test!(
    fn a_flood_never_blocks_and_every_open_is_delivered_or_counted_lost() {
        const OPENS: u64 = 100_000;
        let monitor = Monitor::attach();
        let file = monitor.path("flooded");
        std::fs::write(&file, b"x").unwrap();
        // Nothing reads meanwhile: the buffer fills and the rest is dropped,
        // never waited for.
        let pid = flood(&file, OPENS, Duration::from_secs(120));

        let (events, summary) = monitor.events(&["--type", "open", "--pid", &pid.to_string()]);
        assert!(events
            .iter()
            .all(|e| e["path"] == file.to_str().unwrap() && e["access"] == "read"));
        let delivered = events.len() as u64;
        let lost = summary["lost_by_type"]["open"].as_u64().unwrap();
        assert!(
            lost > 0,
            "the 4 MiB buffer should have overflowed: {summary}"
        );
        assert!(delivered > 0, "{summary}");
        assert_eq!(delivered + lost, OPENS, "{summary}");
        assert!(summary["lost"].as_u64().unwrap() >= lost);
    }
);
