//! Bad rules files: each gets its own error, naming the rule and field, and
//! leaves the kernel exactly as it was.

mod common;

use common::{meshbpf, VethPair};
use serde_json::Value;

/// (file contents, what the error must say)
const BAD_FILES: &[(&str, &str)] = &[
    ("", "the file is empty"),
    ("not json", "line 1, column 2: expected ident"),
    (
        r#"{"rules":{}}"#,
        r#"field "rules": expected an array of rules, found {}"#,
    ),
    (
        r#"{"default":"maybe","rules":[]}"#,
        r#"field "default": "maybe" is not an action"#,
    ),
    (
        r#"{"rules":[{"action":"deny","dpot":22}]}"#,
        r#"rule 0, field "dpot": not a known field; did you mean "dport"?"#,
    ),
    (
        r#"{"rules":[{"action":"allow"},{"action":"deny","src":"10.0.0.1/24"}]}"#,
        r#"rule 1, field "src": 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"#,
    ),
    (
        r#"{"rules":[{"action":"deny","src":"300.0.0.0/8"}]}"#,
        r#"rule 0, field "src": "300.0.0.0/8" is not an IP address or CIDR"#,
    ),
    (
        r#"{"rules":[{"action":"deny","protocol":"tcp","dport":70000}]}"#,
        r#"rule 0, field "dport": 70000 is not a port (0-65535)"#,
    ),
    (
        r#"{"rules":[{"action":"deny","protocol":"tcp","sport":"90-80"}]}"#,
        r#"rule 0, field "sport": "90-80" is not a port range: 90 is greater than 80"#,
    ),
    (
        r#"{"rules":[{"action":"deny","protocol":"icmp","dport":80}]}"#,
        r#"rule 0, field "dport": protocol icmp has no ports"#,
    ),
    (
        r#"{"rules":[{"action":"deny","src":"10.0.0.0/8","dst":"2001:db8::/32"}]}"#,
        r#"rule 0, field "dst": 2001:db8::/32 is IPv6 but src 10.0.0.0/8 is IPv4"#,
    ),
    (
        r#"{"rules":[{"action":"deny","rate_limit":{"pps":10}}]}"#,
        r#"rule 0, field "rate_limit": only allow rules can be rate limited"#,
    ),
    (
        r#"{"rules":[{"action":"allow","protocol":"arp","src":"10.0.0.0/8"}]}"#,
        r#"rule 0, field "src": protocol arp is not IP"#,
    ),
];

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn too_many_rules() -> String {
    let rules: Vec<Value> = (0..16385)
        .map(|_| serde_json::json!({"action": "deny"}))
        .collect();
    serde_json::json!({ "rules": rules }).to_string()
}

fn every_bad_file() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = BAD_FILES
        .iter()
        .map(|(t, m)| (t.to_string(), m.to_string()))
        .collect();
    all.push((
        too_many_rules(),
        r#"field "rules": 16385 rules; at most 16384 are supported"#.into(),
    ));
    all
}

#[test]
fn check_names_the_rule_and_field_of_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, expected)) in every_bad_file().iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.json"), text);
        let r = meshbpf(&["filter", "check", &path, "-j"]);
        assert_eq!(r.code, 1, "{expected}: {r:?}");
        let error = r.json();
        let message = error["error"].as_str().unwrap();
        assert!(
            message.starts_with(&path) && message.contains(expected),
            "wanted {expected:?}, got {message:?}"
        );
        assert!(
            !error["hint"].as_str().unwrap_or_default().is_empty(),
            "every mistake comes with a hint: {error}"
        );
    }
}

privileged_test!(
    fn a_bad_file_changes_nothing_in_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(
            &dir,
            "good.json",
            r#"{"default":"allow","rules":[{"action":"deny","src":"203.0.113.0/24"}]}"#,
        );
        let (counted, filtered) = (VethPair::new(), VethPair::new());
        let counter = counted.meshbpf(&["attach", &counted.dev, "-j"]).ok().json();
        filtered
            .meshbpf(&["attach", &filtered.dev, "--filter", &good])
            .ok();
        let shown_before = filtered
            .meshbpf(&["filter", "show", &filtered.dev, "-j"])
            .ok()
            .json();

        for (i, (text, expected)) in every_bad_file().iter().enumerate() {
            let path = write(&dir, &format!("bad{i}.json"), text);
            let apply = filtered.meshbpf(&["filter", "apply", &filtered.dev, &path]);
            assert_eq!(apply.code, 1, "{apply:?}");
            assert!(
                apply.stderr.contains(expected.as_str()),
                "wanted {expected:?}: {apply:?}"
            );
            let attach = counted.meshbpf(&["attach", &counted.dev, "--filter", &path]);
            assert_eq!(attach.code, 1, "{attach:?}");
            assert!(
                attach.stderr.contains(expected.as_str()),
                "wanted {expected:?}: {attach:?}"
            );
        }

        let shown_after = filtered
            .meshbpf(&["filter", "show", &filtered.dev, "-j"])
            .ok()
            .json();
        assert_eq!(
            shown_after, shown_before,
            "the filter kept its rules and generation"
        );
        let still = counted.meshbpf(&["stats", &counted.dev, "-j"]).ok().json();
        assert_eq!(
            (&still["program"], &still["prog_id"]),
            (&counter["program"], &counter["prog_id"])
        );
        assert!(
            !counted.pin_dir().join("xdp_mesh_filter").exists(),
            "no filter pins were left"
        );
    }
);

/// `filter check --stats` says how a good file compiled, in numbers worked
/// out by hand: vectors {1} (no source prefix), {0, 1} (10/8, every rule,
/// port 22, TCP), {0} (no dport, other protocols) and {} (ARP); the table's
/// first levels and port arrays, 4 x 65,536 entries, and no chunks (/8).
#[test]
fn check_stats_say_how_a_set_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "good.json",
        r#"{"rules":[{"action":"deny","src":"10.0.0.0/8"},{"action":"allow","protocol":"tcp","dport":22}]}"#,
    );
    let r = meshbpf(&["filter", "check", &path, "--stats"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.trim_end(),
        "2 rules compile to 4 vectors and 262144 table entries (1.0 MiB)\n\
         \x20 memory: 1.0 MiB in all: vectors 0.0 MiB (4 of 2088 bytes), table 1.0 MiB (262144 entries)\n\
         \x20 source: IPv4 in the table (0 chunks of 256), IPv6 in the LPM trie (0 prefixes)\n\
         \x20 destination: not looked up (no rule names one)\n\
         \x20 protocol: looked up\n\
         \x20 source port: not looked up (no rule names one)\n\
         \x20 destination port: looked up\n\
         \x20 per packet at most: 17 map lookups and a scan of 2 vector words"
    );
    let json = meshbpf(&["filter", "check", &path, "-j"]).json();
    let stats = &json["stats"];
    assert_eq!(stats["vectors"], 4);
    // Two table entries share an 8-byte array value.
    assert_eq!(stats["memory_bytes"], 4 * 2088 + 262_144 * 4);
    assert_eq!(stats["lookups"]["dst"], false);
    assert_eq!(json["warnings"], serde_json::json!([]));
}
