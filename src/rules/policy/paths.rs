//! Path prefixes as lsm_monitor matches them: the program looks a path up
//! in an LPM trie, which finds the longest key that starts the path. A
//! prefix `P` becomes the keys "P\0" (the path P itself) and "P/" (what is
//! under it), "/" the one key "/"; each key carries the flags of every
//! prefix that covers it, so the longest match alone decides.

use super::PathEntry;

/// `path` with `.`, `..` and empty components resolved lexically, as the
/// kernel would report the path it names.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `prefix` covers `path`: the path is the prefix or under it.
pub fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn keys(prefix: &str) -> Vec<Vec<u8>> {
    if prefix == "/" {
        return vec![b"/".to_vec()];
    }
    [0, b'/']
        .into_iter()
        .map(|end| {
            let mut key = prefix.as_bytes().to_vec();
            key.push(end);
            key
        })
        .collect()
}

pub fn entry_count<'a>(prefixes: impl Iterator<Item = &'a str>) -> usize {
    prefixes.map(|prefix| keys(prefix).len()).sum()
}

/// The map entries of distinct `prefixes` with their flags, each closed
/// under the prefixes that cover it.
pub fn entries(prefixes: &[(&str, u32)]) -> Vec<PathEntry> {
    prefixes
        .iter()
        .flat_map(|&(prefix, _)| {
            let flags = prefixes
                .iter()
                .filter(|(outer, _)| covers(outer, prefix))
                .fold(0, |flags, (_, flag)| flags | flag);
            keys(prefix)
                .into_iter()
                .map(move |key| PathEntry { key, flags })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Access, Policy, Subject, Verdict, DENY_EXEC, DENY_WRITE, WATCH};
    use super::*;
    use crate::rules::policy::lsm_limits;

    /// What the program's lookup finds: the key is the path and its NUL,
    /// cut to the key's size; the longest entry that starts it wins.
    fn lookup(entries: &[PathEntry], path: &str) -> u32 {
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        key.truncate(lsm_limits::LSM_KEY_PATH_LEN.0 as usize);
        entries
            .iter()
            .filter(|entry| key.starts_with(&entry.key))
            .max_by_key(|entry| entry.key.len())
            .map_or(0, |entry| entry.flags)
    }

    /// lsm_monitor.bpf.c's on_open and on_exec: whether the access makes an
    /// event, and whether the policy denies it, from the flags it looked up.
    fn program_decision(access: Access, flags: u32) -> (bool, bool) {
        match access {
            Access::Read => (flags & WATCH != 0, false),
            Access::Write => (flags & (WATCH | DENY_WRITE) != 0, flags & DENY_WRITE != 0),
            Access::Exec => (true, flags & DENY_EXEC != 0),
        }
    }

    fn compiled(text: &str) -> (Policy, Vec<PathEntry>) {
        let policy = parse(text).unwrap();
        let entries = policy.compile().unwrap().paths;
        (policy, entries)
    }

    fn entry(key: &[u8], flags: u32) -> PathEntry {
        PathEntry {
            key: key.to_vec(),
            flags,
        }
    }

    #[test]
    fn normalize_resolves_dots_and_repeated_slashes() {
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("//"), "/");
        assert_eq!(normalize("/etc/"), "/etc");
        assert_eq!(normalize("/a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalize("/../.."), "/");
    }

    #[test]
    fn a_prefix_covers_itself_and_what_is_under_it_only() {
        assert!(covers("/etc", "/etc"));
        assert!(covers("/etc", "/etc/passwd"));
        assert!(!covers("/etc", "/etcetera"));
        assert!(!covers("/etc", "/et"));
        assert!(!covers("/etc", "etc/passwd"));
        assert!(covers("/", "/etc"));
        assert!(covers("/", "/"));
        assert!(!covers("/", "etc"));
    }

    #[test]
    fn each_prefix_is_an_exact_and_an_under_entry() {
        let (_, entries) = compiled(r#"{"watch": ["/etc"], "deny": {"write": ["/"]}}"#);
        assert_eq!(
            entries,
            [
                entry(b"/etc\0", WATCH | DENY_WRITE),
                entry(b"/etc/", WATCH | DENY_WRITE),
                entry(b"/", DENY_WRITE),
            ]
        );
    }

    #[test]
    fn nested_prefixes_carry_the_flags_of_those_around_them() {
        let (_, entries) = compiled(
            r#"{"watch": ["/etc", "/etc/ssh/keys"], "deny": {"write": ["/etc/ssh"], "exec": ["/etc"]}}"#,
        );
        assert_eq!(
            entries,
            [
                entry(b"/etc\0", WATCH | DENY_EXEC),
                entry(b"/etc/", WATCH | DENY_EXEC),
                entry(b"/etc/ssh/keys\0", WATCH | DENY_WRITE | DENY_EXEC),
                entry(b"/etc/ssh/keys/", WATCH | DENY_WRITE | DENY_EXEC),
                entry(b"/etc/ssh\0", WATCH | DENY_WRITE | DENY_EXEC),
                entry(b"/etc/ssh/", WATCH | DENY_WRITE | DENY_EXEC),
            ]
        );
        assert_eq!(
            lookup(&entries, "/etc/ssh/sshd_config"),
            WATCH | DENY_WRITE | DENY_EXEC
        );
        assert_eq!(lookup(&entries, "/etc/sshd"), WATCH | DENY_EXEC);
        assert_eq!(lookup(&entries, "/etcetera"), 0);
        assert_eq!(lookup(&entries, "/etc"), WATCH | DENY_EXEC);
        assert_eq!(lookup(&entries, "/et"), 0);
    }

    #[test]
    fn paths_longer_than_the_key_match_on_their_first_bytes() {
        let deep = format!("/{}", "d".repeat(250));
        let (policy, entries) = compiled(&format!(r#"{{"watch": ["{deep}"]}}"#));
        let under = format!("{deep}/{}", "f".repeat(300));
        assert_eq!(lookup(&entries, &under), WATCH);
        assert_eq!(policy.path_flags(&under), WATCH);
        let beside = format!("{deep}x/{}", "f".repeat(300));
        assert_eq!(lookup(&entries, &beside), 0);
        assert_eq!(policy.path_flags(&beside), 0);
    }

    /// Every path of up to four components from names that share prefixes
    /// with each other, against policies with nested, overlapping and root
    /// prefixes: the flags of the longest entry are those of every prefix
    /// that covers the path.
    #[test]
    fn the_longest_match_agrees_with_the_covering_prefixes_everywhere() {
        const NAMES: [&str; 6] = ["etc", "etcetera", "ssh", "e", "tmp", "x"];
        let policies = [
            r#"{"watch": ["/etc"], "deny": {"write": ["/etc/ssh"], "exec": ["/tmp"]}}"#,
            r#"{"watch": ["/"], "deny": {"write": ["/etc/ssh/ssh"], "exec": ["/e", "/etc/e"]}}"#,
            r#"{"watch": ["/etc/ssh", "/x/x/x"], "deny": {"write": ["/", "/etcetera"], "exec": ["/etc/ssh/x"]}}"#,
            r#"{"watch": ["/e/e", "/e/e/e/e"], "deny": {"write": ["/e/e/e"], "exec": ["/e"]}}"#,
            r#"{"deny": {"exec": ["/"], "write": ["/tmp/tmp"]}}"#,
        ];
        let mut paths = vec!["/".to_owned()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            frontier = frontier
                .iter()
                .flat_map(|parent| NAMES.iter().map(move |name| format!("{parent}/{name}")))
                .collect();
            paths.extend(frontier.iter().cloned());
        }
        assert_eq!(paths.len(), 1 + 6 + 36 + 216 + 1296);
        let nobody = Subject {
            uid: 4242,
            comm: "nobody".into(),
            cgroups: vec![1],
        };
        let mut matched = 0;
        for text in policies {
            let (policy, entries) = compiled(text);
            for path in &paths {
                let flags = lookup(&entries, path);
                assert_eq!(policy.path_flags(path), flags, "{text}: {path}");
                for access in Access::ALL {
                    let (reported, denied) = program_decision(access, flags);
                    let verdict = policy.evaluate(access, path, &nobody);
                    assert_eq!(
                        (policy.reports(access, path), verdict == Verdict::Denied),
                        (reported, denied),
                        "{text}: {access} {path}"
                    );
                }
                matched += usize::from(flags != 0);
            }
        }
        assert!(
            matched > 1000,
            "the policies cover many of the paths: {matched}"
        );
    }
}
