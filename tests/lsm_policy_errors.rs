//! lsm_monitor policy files through the real binary: every mistake is
//! refused with the file, the field and a hint; a good policy is shown as
//! the program will apply it; enforce mode refuses a policy that would lock
//! the operator out.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{meshbpf, PinRoot, BIN};
use serde_json::{json, Value};

/// (file contents, what the error must say after the file's path)
const BAD_FILES: &[(&str, &str)] = &[
    ("", "the file is empty"),
    (
        "{\"watch\": [\"/etc\"],}",
        "line 1, column 20: trailing comma",
    ),
    (
        r#"{"watch": ["/etc"], "watch": []}"#,
        r#"line 1, column 27: key "watch" appears twice"#,
    ),
    (
        r#"{"wach": ["/etc"]}"#,
        r#"field "wach": not a known field; did you mean "watch"?"#,
    ),
    (
        r#"{"watch": "/etc"}"#,
        r#"field "watch": expected a list like ["/etc"], found "/etc""#,
    ),
    (
        r#"{"watch": ["/etc", "etc/ssh"]}"#,
        r#"field "watch[1]": "etc/ssh" is not an absolute path; relative paths never match"#,
    ),
    (
        r#"{"deny": {"write": ["/etc/../usr"]}}"#,
        r#"field "deny.write[0]": "/etc/../usr" is not a normalized path; did you mean "/usr"?"#,
    ),
    (
        r#"{"deny": {"exec": ["/tmp", "/tmp/"]}}"#,
        r#"field "deny.exec[1]": "/tmp" is already in the list, at [0]"#,
    ),
    (
        r#"{"deny": {"modules": "yes"}}"#,
        r#"field "deny.modules": expected true or false, found "yes""#,
    ),
    (
        r#"{"deny": {"ptrace": true}}"#,
        r#"field "deny.ptrace": not a known field"#,
    ),
    (
        r#"{"allow": {"uid": ["root"]}}"#,
        r#"field "allow.uid[0]": expected a uid like 0 or 1000, found "root""#,
    ),
    (
        r#"{"allow": {"comm": ["systemd-journald"]}}"#,
        r#"field "allow.comm[0]": "systemd-journald" is 16 bytes long; the kernel keeps the first 15 bytes of a command name"#,
    ),
    (
        r#"{"allow": {"cgroup": ["/proc"]}}"#,
        r#"field "allow.cgroup[0]": "/proc": not a directory of a cgroup v2 hierarchy"#,
    ),
    (
        r#"{"allow": {"cgroup": ["/sys/fs/cgroup/meshbpf-no-such-group"]}}"#,
        r#"field "allow.cgroup[0]": "/sys/fs/cgroup/meshbpf-no-such-group": No such file or directory (os error 2)"#,
    ),
];

fn too_many_prefixes() -> (String, String) {
    let prefixes: Vec<String> = (0..257).map(|i| format!("/srv/{i}")).collect();
    (
        json!({ "watch": prefixes }).to_string(),
        "the prefixes take 514 path entries, more than the 512 a policy holds".into(),
    )
}

fn every_bad_file() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = BAD_FILES
        .iter()
        .map(|(text, message)| (text.to_string(), message.to_string()))
        .collect();
    all.push(too_many_prefixes());
    all
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_names_the_file_and_field_of_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, expected)) in every_bad_file().iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.json"), text);
        let r = meshbpf(&["lsm", "check", &path, "-j"]);
        assert_eq!(r.code, 1, "{expected}: {r:?}");
        let error = r.json();
        assert_eq!(error["error"], format!("{path}: {expected}"), "{r:?}");
        assert!(
            !error["hint"].as_str().unwrap_or_default().is_empty(),
            "every mistake comes with a hint: {error}"
        );
        let table = meshbpf(&["lsm", "check", &path, "--enforce"]);
        assert_eq!(table.code, 1, "{table:?}");
        assert!(table.stdout.is_empty(), "{table:?}");
        assert!(
            table
                .stderr
                .starts_with(&format!("error: {path}: {expected}\nhint: ")),
            "{table:?}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let r = meshbpf(&["lsm", "check", "/nonexistent/policy.json", "-j"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.json()["error"],
        "/nonexistent/policy.json: cannot read it: No such file or directory (os error 2)"
    );
}

fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|line| {
            let (fields, after) = line.split_once(" - ")?;
            after
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(fields.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

fn own_exe() -> String {
    std::fs::canonicalize(BIN)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// The comm meshbpf sees as its parent's: this test process's.
fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_owned()
}

#[test]
fn check_shows_what_a_good_policy_watches_denies_and_exempts() {
    let dir = tempfile::tempdir().unwrap();
    // Not /tmp: a checkout under it holds meshbpf, whose exec the lock-out
    // probes check.
    let drop = dir.path().join("drop");
    let drop = drop.to_str().unwrap();
    let drop_x = format!("{drop}/x");
    let cgroup = cgroup2_root();
    let cgroup_id = std::fs::metadata(&cgroup).unwrap().ino();
    let policy = json!({
        "watch": ["/etc", "/root/.ssh/"],
        "deny": {"write": ["/etc/ssh"], "exec": [drop, "/dev/shm"], "modules": true},
        "allow": {"uid": [4000], "comm": ["apt"], "cgroup": [cgroup.to_str().unwrap(), 77]}
    });
    let path = write(&dir, "good.json", &policy.to_string());
    let r = meshbpf(&[
        "lsm",
        "check",
        &path,
        "--path",
        "/etc/ssh/sshd_config",
        "--path",
        &drop_x,
        "-j",
    ])
    .ok();
    let report = r.json();
    assert_eq!(report["policy"], path.as_str());
    assert_eq!(report["mode"], "audit");
    assert_eq!(report["accepted"], true);
    assert_eq!(report["watch"], json!(["/etc", "/root/.ssh"]));
    assert_eq!(
        report["deny"],
        json!({"write": ["/etc/ssh"], "exec": [drop, "/dev/shm"],
               "ptrace_other_users": false, "modules": true})
    );
    assert_eq!(
        report["allow"],
        json!({"uid": [4000], "comm": ["apt"],
               "cgroup": [{"path": cgroup.to_str().unwrap(), "id": cgroup_id}, {"id": 77}]})
    );
    assert_eq!(report["path_entries"], 10);
    assert_eq!(report["warnings"], json!([]));
    assert_eq!(
        report["paths"],
        json!([
            {"path": "/etc/ssh/sshd_config",
             "read": {"reported": true, "verdict": "allowed", "rule": null},
             "write": {"reported": true, "verdict": "audit", "rule": "deny.write \"/etc/ssh\""},
             "exec": {"reported": true, "verdict": "allowed", "rule": null}},
            {"path": drop_x,
             "read": {"reported": false, "verdict": "allowed", "rule": null},
             "write": {"reported": false, "verdict": "allowed", "rule": null},
             "exec": {"reported": true, "verdict": "audit", "rule": format!("deny.exec \"{drop}\"")}}
        ])
    );
    let probes = report["lockout_probes"].as_array().unwrap();
    assert_eq!(
        probes[0],
        json!({"access": "exec", "path": own_exe(), "what": "meshbpf itself",
               "uid": nix::unistd::getuid().as_raw(), "comm": own_comm(),
               "rule": null, "verdict": "allowed"})
    );
    assert!(
        probes.iter().all(|p| p["verdict"] == "allowed"),
        "{probes:?}"
    );
    let last = probes.last().unwrap();
    assert_eq!(
        (&last["access"], &last["path"], &last["comm"]),
        (
            &json!("write"),
            &json!("/sys/fs/bpf/meshbpf"),
            &json!("meshbpf")
        )
    );

    let table = meshbpf(&["lsm", "check", &path, "--enforce"]).ok();
    assert!(
        table.stdout.starts_with(&format!(
            "{path} · enforce mode · accepted · 10 path entries\n"
        )),
        "{table:?}"
    );
    assert!(table.stdout.contains("│ deny exec "), "{table:?}");
    assert!(
        table.stdout.contains(&format!(
            "never denied: uid 4000 · comm apt · cgroup \"{}\" (id {cgroup_id}) · cgroup id 77",
            cgroup.display()
        )),
        "{table:?}"
    );
}

/// A policy that denies exec from the directory meshbpf runs from.
fn denying_meshbpf(allow: Value) -> String {
    let dir = Path::new(&own_exe()).parent().unwrap().to_owned();
    json!({"deny": {"exec": [dir.to_str().unwrap()]}, "allow": allow}).to_string()
}

#[test]
fn enforce_refuses_a_policy_that_would_deny_meshbpf_itself() {
    let dir = tempfile::tempdir().unwrap();
    let exe = own_exe();
    let exe_dir = Path::new(&exe).parent().unwrap().display().to_string();
    let path = write(
        &dir,
        "lockout.json",
        &denying_meshbpf(json!({"comm": ["meshbpf"]})),
    );
    let uid = nix::unistd::getuid().as_raw();

    let refused = meshbpf(&["lsm", "check", &path, "--enforce", "-j"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let error = refused.json();
    assert_eq!(
        error["error"],
        format!(
            "the policy would lock the operator out: deny.exec \"{exe_dir}\" denies exec of {exe} (meshbpf itself) to uid {uid} with comm \"{}\"",
            own_comm()
        )
    );
    assert!(
        error["hint"].as_str().unwrap().starts_with(&format!(
            "allow-list the operator (\"allow\": {{\"uid\": [{uid}]}}"
        )),
        "{error}"
    );

    // Audit mode denies nothing, so it accepts the policy and shows the
    // probe that enforce mode would refuse.
    let audited = meshbpf(&["lsm", "check", &path, "-j"]).ok().json();
    let probe = &audited["lockout_probes"][0];
    assert_eq!(
        (&probe["path"], &probe["verdict"], &probe["rule"]),
        (
            &json!(exe),
            &json!("audit"),
            &json!(format!("deny.exec \"{exe_dir}\""))
        )
    );

    // Allow-listing the operator's uid makes it acceptable.
    let exempt = write(&dir, "exempt.json", &denying_meshbpf(json!({"uid": [uid]})));
    let accepted = meshbpf(&["lsm", "check", &exempt, "--enforce", "-j"])
        .ok()
        .json();
    assert_eq!(accepted["mode"], "enforce");
    assert_eq!(accepted["lockout_probes"][0]["verdict"], "exempt");
}

privileged_test!(
    fn attach_with_a_bad_policy_attaches_nothing() {
        let root = PinRoot::new();
        let dir = tempfile::tempdir().unwrap();
        for (i, (text, expected)) in every_bad_file().iter().enumerate() {
            let path = write(&dir, &format!("bad{i}.json"), text);
            let r = root.meshbpf(&["attach", "--lsm", "--policy", &path, "-j"]);
            assert_eq!(r.code, 1, "{expected}: {r:?}");
            assert_eq!(r.json()["error"], format!("{path}: {expected}"), "{r:?}");
            assert!(
                !root.path.join("host").join("lsm_monitor").exists(),
                "nothing was pinned for {expected}"
            );
        }
        let listed = root.meshbpf(&["list", "-j"]).ok().json();
        assert!(
            !listed.to_string().contains("lsm_monitor"),
            "nothing is attached: {listed}"
        );
    }
);
