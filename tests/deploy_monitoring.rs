//! deploy/prometheus/meshbpf.rules.yml and deploy/grafana/meshbpf.json: the
//! alerts checked and unit-tested by Debian's promtool, the dashboard's JSON
//! and PromQL (promtool parses every query), and every metric either of
//! them names found in what a real `meshbpf serve` answers with everything
//! attached: the live scrape is the oracle, not meshbpf's code.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::process::Command;

use common::serve::Server;
use common::{filter, PinRoot, VethPair};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/meshbpf.rules.yml"
);
const RULES_TEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/meshbpf.rules.test.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/meshbpf.json");

const ALERTS: [&str; 5] = [
    "MeshbpfFilterDropSpike",
    "MeshbpfFlowTableNearlyFull",
    "MeshbpfLostEvents",
    "MeshbpfHealthCheckFailing",
    "MeshbpfDown",
];

/// promtool ARGS, which must succeed; its stdout.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package prometheus; make deps installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promtool {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid YAML")
}

fn dashboard() -> Json {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("valid JSON")
}

/// The alerting rules: (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let rules = yaml(RULES);
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .map(|r| {
            let name = r["alert"].as_str().expect("only alerting rules");
            (name.to_string(), r["expr"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every panel, rows included (this dashboard nests none in rows).
fn panels(dash: &Json) -> &Vec<Json> {
    dash["panels"].as_array().unwrap()
}

/// The PromQL of every panel query.
fn panel_queries(dash: &Json) -> Vec<String> {
    panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The queries of the template variables (`label_values(SELECTOR, label)`).
fn variable_queries(dash: &Json) -> Vec<String> {
    dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["query"]["query"].as_str().unwrap().to_string())
        .collect()
}

/// Metric names in PromQL: every token that starts with `meshbpf_` (all of
/// meshbpf's metrics do, and no function, keyword or label does).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("meshbpf_") {
        let before = rest[..at].chars().next_back();
        let token: String = rest[at..].chars().take_while(|&c| is_name(c)).collect();
        if !before.is_some_and(is_name) {
            names.insert(token.clone());
        }
        rest = &rest[at + token.len()..];
    }
    names
}

/// Sample names in an exposition (histograms' `_bucket`, `_sum`, `_count`).
fn sample_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests_cover_each_alert() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", RULES_TEST]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let names: Vec<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ALERTS);
    // Each alert has a case where it must fire and one where it must not.
    let tests = yaml(RULES_TEST);
    let cases: Vec<&Yaml> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .collect();
    for alert in ALERTS {
        let expected: Vec<usize> = cases
            .iter()
            .filter(|c| c["alertname"].as_str() == Some(alert))
            .map(|c| c["exp_alerts"].as_sequence().unwrap().len())
            .collect();
        assert!(
            expected.contains(&0),
            "{alert}: no case where it stays quiet"
        );
        assert!(
            expected.iter().any(|&n| n > 0),
            "{alert}: no case where it fires"
        );
    }
}

#[test]
fn the_dashboard_is_grafana_json_with_the_issue_s_sections_and_queries_that_parse() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "meshbpf");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let rows: Vec<&str> = panels(&dash)
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Health",
            "Traffic",
            "Filter",
            "Flow table",
            "Syscall latency",
            "LSM",
            "Program run time"
        ]
    );
    let variables: HashSet<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id again"
        );
        let kind = panel["type"].as_str().unwrap();
        assert!(
            ["row", "stat", "table", "timeseries", "heatmap"].contains(&kind),
            "{title}: {kind}"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        // No two panels share a grid cell.
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{title} overlaps another panel at {cell:?}"
            );
        }
        if kind == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let refs: HashSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
    }
    for expr in panel_queries(&dash).iter().chain(&variable_queries(&dash)) {
        for var in expr.split('$').skip(1) {
            let name: String = var
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                variables.contains(name.as_str()) || name == "__rate_interval",
                "${name} is not a variable of the dashboard: {expr}"
            );
        }
    }

    // promtool parses each query with Prometheus's own PromQL parser, as the
    // expression of a recording rule, once Grafana's variables are replaced
    // the way Grafana does (`All` is `.*`).
    let concrete = |expr: &str| {
        ["$instance", "$interface", "$syscall"]
            .iter()
            .fold(expr.replace("$__rate_interval", "1m"), |e, v| {
                e.replace(v, ".*")
            })
    };
    let rules: Vec<Yaml> = panel_queries(&dash)
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            serde_yaml::to_value(serde_json::json!({
                "record": format!("dashboard:query_{i}"),
                "expr": concrete(expr),
            }))
            .unwrap()
        })
        .collect();
    let count = rules.len();
    assert!(count >= 20, "{count} queries");
    let file = tempfile::NamedTempFile::new().unwrap();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(file.path(), serde_yaml::to_string(&doc).unwrap()).unwrap();
    let checked = promtool(&["check", "rules", file.path().to_str().unwrap()]);
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
}

privileged_test!(
    fn every_metric_the_dashboard_and_alerts_name_is_in_a_live_scrape() {
        let root = PinRoot::new();
        let net = VethPair::new();
        let rules = filter::rules_file(&serde_json::json!({
            "default": "allow",
            "rate_limit": {"pps": 1000, "burst": 1000},
            "rules": [{"action": "deny", "protocol": "udp", "dport": 9}]
        }));
        let path = rules.path.to_str().unwrap();
        net.meshbpf(&root.args(&["attach", &net.dev, "--filter", path]))
            .ok();
        root.meshbpf(&["attach", "--latency", "--syscalls", "getpid"])
            .ok();
        nix::unistd::getpid();
        let watched = tempfile::tempdir().unwrap();
        let policy = filter::rules_file(&serde_json::json!({ "watch": [watched.path()] }));
        root.meshbpf(&["attach", "--lsm", "--policy", policy.path.to_str().unwrap()])
            .ok();
        net.send_udp(format!("{}:9", common::ADDR).parse().unwrap(), 5, 10);

        let server = Server::start(Some(&net.ns), &root.args(&[]));
        let exported = common::wait_for(std::time::Duration::from_secs(5), || {
            let live = server.scrape();
            live.contains("meshbpf_syscall_latency_seconds_bucket{")
                .then(|| sample_names(&live))
        })
        .expect("no syscall latency series: getpid was not counted");

        let dash = dashboard();
        let mut named = BTreeSet::new();
        for expr in panel_queries(&dash)
            .into_iter()
            .chain(variable_queries(&dash))
            .chain(alert_rules().into_iter().map(|(_, e)| e))
        {
            named.extend(metric_names(&expr));
        }
        let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(missing.is_empty(), "not exported by serve: {missing:?}");
        // The tokenizer found the metrics of every section, not a few.
        let expected = [
            "meshbpf_attachments",
            "meshbpf_bytes_total",
            "meshbpf_feature_ready",
            "meshbpf_filter_banned_packets_total",
            "meshbpf_filter_rate_limited_packets_total",
            "meshbpf_filter_rule_packets_total",
            "meshbpf_filter_syn_dropped_packets_total",
            "meshbpf_filter_verdict_packets_total",
            "meshbpf_flow_evictions_total",
            "meshbpf_flows_created_total",
            "meshbpf_health_check",
            "meshbpf_lsm_events_total",
            "meshbpf_lsm_lost_events_total",
            "meshbpf_lsm_verdicts_total",
            "meshbpf_map_capacity",
            "meshbpf_map_entries",
            "meshbpf_packets_total",
            "meshbpf_program_run_time_seconds_total",
            "meshbpf_program_runs_total",
            "meshbpf_series_folded",
            "meshbpf_syscall_latency_seconds_bucket",
            "meshbpf_syscall_latency_seconds_count",
            "meshbpf_up",
        ];
        assert_eq!(named.iter().collect::<Vec<_>>(), expected);
    }
);
