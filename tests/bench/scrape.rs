//! Section 3, scrape part: how long one Prometheus scrape of `meshbpf serve`
//! takes with a filter of 10,000 rules and a flow table of 10,000 flows
//! attached, and `stats --prometheus` (a whole process) on the same state.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::MapHandle;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{self, http, run, VethPair, BIN};
use crate::flow_table::{fill, flows_pin, monotonic_ns, timed};
use crate::rulesets;
use crate::stats::{self, Summary};
use crate::Config;

const RULES: usize = 10_000;
const FLOWS: u32 = 10_000;
const MAX_FLOWS: u32 = 16_384;

pub struct Results {
    rounds: usize,
    scrape_ms: Vec<f64>,
    once_ms: Vec<f64>,
    exposition_bytes: usize,
    series: usize,
}

pub fn measure(config: &Config) -> Results {
    let pair = VethPair::new();
    let dev = pair.dev.clone();
    let flows_pin = flows_pin(&pair);
    VethPair::in_netns(&pair.ns, || {
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rules.path(), rulesets::cidr_rules(RULES)).unwrap();
        let max_flows = MAX_FLOWS.to_string();
        let rules_path = rules.path().to_string_lossy();
        timed(&[
            BIN,
            "attach",
            &dev,
            "--filter",
            &rules_path,
            "--max-flows",
            &max_flows,
        ]);
        let map = MapHandle::from_pinned_path(&flows_pin).expect("the pinned flow table");
        fill(&map, monotonic_ns(), FLOWS);
        drop(map);
        let results = scrape_in_netns(config, &dev);
        timed(&[BIN, "detach", &dev]);
        results
    })
}

fn scrape_in_netns(config: &Config, dev: &str) -> Results {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // Every rule its own series, as the scrape below is timed with them all.
        .args(["--max-series", &RULES.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn meshbpf serve");
    common::wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("meshbpf serve never listened");

    // The warm-up scrape, checked: every rule and every flow is in it.
    let warm = http::get(port, "/metrics", None);
    assert_eq!(warm.status, 200, "{}", warm.body);
    let rule_series = format!("meshbpf_filter_rule_packets_total{{interface=\"{dev}\"");
    assert_eq!(
        warm.body
            .lines()
            .filter(|l| l.starts_with(&rule_series))
            .count(),
        RULES
    );
    let flows = format!("meshbpf_flows{{interface=\"{dev}\"}} {FLOWS}\n");
    assert!(warm.body.contains(&flows), "no `{flows}` in the scrape");

    let (mut scrape_ms, mut once_ms) = (Vec::new(), Vec::new());
    for _ in 0..config.rounds {
        let started = Instant::now();
        let answer = http::get(port, "/metrics", None);
        scrape_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(answer.status, 200);
        let started = Instant::now();
        let out = run(Command::new(BIN).args(["stats", "--prometheus"]));
        once_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(out.status.success());
    }
    kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM).unwrap();
    assert!(serve.wait().unwrap().success(), "serve's exit status");
    Results {
        rounds: config.rounds,
        scrape_ms,
        once_ms,
        exposition_bytes: warm.body.len(),
        series: warm.body.lines().filter(|l| !l.starts_with('#')).count(),
    }
}

impl Results {
    pub fn markdown(&self) -> String {
        let scrape = Summary::of(&self.scrape_ms);
        let once = Summary::of(&self.once_ms);
        let row = |what: &str, s: &Summary| {
            let mut row = vec![what.to_string()];
            row.extend(s.cells(stats::ms));
            row
        };
        let rows = vec![
            row("`GET /metrics` from `meshbpf serve`", &scrape),
            row("`meshbpf stats --prometheus` (a process)", &once),
        ];
        format!(
            "### Prometheus scrape with {rules} rules and {flows} flows\n\n\
`meshbpf attach DEV --filter RULES --max-flows {max}` with {rules} CIDR rules, then {flows} synthetic flows \
through BPF_MAP_UPDATE_BATCH (as above). `meshbpf serve` answers a warm-up scrape that must hold a series per \
rule and `meshbpf_flows` = {flows}; the exposition has {series} series ({kb} KB). Then {rounds} rounds of one \
scrape over loopback and one `stats --prometheus`. Each scrape reads every pinned map then and there, under the \
state root's shared lock.\n\n{table}\n",
            rules = stats::thousands(RULES),
            flows = stats::thousands(FLOWS as usize),
            max = MAX_FLOWS,
            series = stats::thousands(self.series),
            kb = self.exposition_bytes / 1000,
            rounds = self.rounds,
            table = stats::table(&["what", "median", "min–max"], &rows),
        )
    }
}
