//! The rule sets xdp_mesh_filter and xdp-filter are measured with, and the
//! addresses and ports of the packets that hit or miss them: both filters
//! see the same rules (as far as each can express them) and the same frames.

use serde_json::{json, Value};

/// Rule counts of every measured rule set.
pub const COUNTS: [usize; 3] = [1, 100, 10_000];

/// The first TCP port a port rule denies.
const FIRST_PORT: usize = 1000;

/// The rule a hit packet matches: the middle of the list, so neither the
/// first rule nor the last flatters an implementation that scans.
pub fn middle(count: usize) -> usize {
    count / 2
}

/// Rule `i`'s /24 is 10.(i / 128).(2 × (i % 128)).0: even third octets only,
/// so the odd /24 next to any rule belongs to no rule, and a packet from it
/// misses after walking the LPM trie as deep as a hit does.
fn cidr_net(i: usize) -> [u8; 4] {
    [10, (i / 128) as u8, (2 * (i % 128)) as u8, 0]
}

/// The source of a packet that hits the middle rule; also the exact address
/// xdp-filter denies for that rule, so one frame serves both programs.
pub fn hit_source(count: usize) -> [u8; 4] {
    exact_source(middle(count))
}

/// A source next to the middle rule's /24, in no rule.
pub fn miss_source(count: usize) -> [u8; 4] {
    let [a, b, c, d] = hit_source(count);
    [a, b, c + 1, d]
}

/// The host xdp-filter's exact rule `i` denies: .1 in rule `i`'s /24.
pub fn exact_source(i: usize) -> [u8; 4] {
    let [a, b, c, _] = cidr_net(i);
    [a, b, c, 1]
}

/// Rule `i` denies this TCP destination port; the odd ports between the
/// rules are in none.
pub fn port(i: usize) -> u16 {
    u16::try_from(FIRST_PORT + 2 * i).expect("port rules fit below 65536")
}

pub fn hit_port(count: usize) -> u16 {
    port(middle(count))
}

pub fn miss_port(count: usize) -> u16 {
    hit_port(count) + 1
}

/// `count` rules denying one /24 source each.
pub fn cidr_rules(count: usize) -> String {
    file(cidr_list(count), json!({}))
}

fn cidr_list(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let [a, b, c, d] = cidr_net(i);
            json!({"action": "deny", "src": format!("{a}.{b}.{c}.{d}/24")})
        })
        .collect()
}

/// `count` rules denying one TCP destination port each.
pub fn port_rules(count: usize) -> String {
    let rules = (0..count).map(|i| json!({"action": "deny", "protocol": "tcp", "dport": port(i)}));
    file(rules.collect(), json!({}))
}

/// The UDP destination port the mixed set's port rule denies; the bench's
/// UDP frames go to port 53, so they miss it.
pub const MIXED_UDP_PORT: u16 = 5353;

/// `count` CIDR rules, then one denying a UDP destination port: a rule set
/// that needs both an address and a port lookup.
pub fn mixed_rules(count: usize) -> String {
    let mut rules = cidr_list(count);
    rules.push(json!({"action": "deny", "protocol": "udp", "dport": MIXED_UDP_PORT}));
    file(rules, json!({}))
}

/// No rules, with an interface-wide limiter (`"rate_limit"` or
/// `"syn_flood"`) so generous that every packet of a test run is admitted:
/// the bench times the limiter's bookkeeping, never a refusal.
pub fn limiter_only(limiter: &str) -> String {
    let admit_all = json!({"pps": 1_000_000_000u64, "burst": 1_000_000_000u64});
    file(Vec::new(), json!({ limiter: admit_all }))
}

pub fn no_rules() -> String {
    file(Vec::new(), json!({}))
}

fn file(rules: Vec<Value>, mut extra: Value) -> String {
    extra["default"] = json!("allow");
    extra["rules"] = Value::Array(rules);
    extra.to_string()
}
