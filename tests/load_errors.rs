//! Bad inputs to `meshbpf load` and friends: each gets its own error, exit
//! 1, `{"error": ...}` with -j, and leaves nothing pinned.

mod common;

use std::fs;
use std::path::Path;

use common::{compile_fixture, compile_fixture_for, PinRoot};

/// Loads `file` and checks the refusal: exit 1, JSON error `message`
/// (after the file name for file errors), nothing in `loaded/`.
fn refused(root: &PinRoot, file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["load", file.to_str().unwrap(), "-j"];
    args.extend(extra);
    let r = root.meshbpf(&args);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        root.loaded_entries().is_empty(),
        "{:?}",
        root.loaded_entries()
    );
    r.json()
}

fn error_of(v: &serde_json::Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

privileged_test!(
    fn each_malformed_file_has_its_own_error_and_pins_nothing() {
        let root = PinRoot::new();
        let dir = tempfile::tempdir().unwrap();
        let (_good_dir, good) = compile_fixture("load_counter");
        let (_be_dir, big_endian) = compile_fixture_for("load_counter", "bpfeb");
        let (_np_dir, no_programs) = compile_fixture("load_no_programs");
        let empty = dir.path().join("empty.bpf.o");
        fs::write(&empty, b"").unwrap();
        let text = dir.path().join("notes.bpf.o");
        fs::write(&text, "SEC(\"xdp\") is not compiled yet\n").unwrap();
        let truncated = dir.path().join("cut.bpf.o");
        let bytes = fs::read(&good).unwrap();
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

        let cases: [(&Path, &str); 6] = [
            (&empty, "the file is empty"),
            (&text, "not an ELF file: it looks like text"),
            (
                Path::new("/bin/true"),
                "an ELF file for x86-64 (EM_X86_64), not a BPF object (EM_BPF)",
            ),
            (
                &big_endian,
                "a big-endian BPF object, but this host is little-endian",
            ),
            (
                &truncated,
                "the file is truncated: the section header table ends at byte",
            ),
            (
                &no_programs,
                "the object has no programs: it has no executable section",
            ),
        ];
        for (file, reason) in cases {
            let e = refused(&root, file, &[]);
            let expected = format!("{} is not loadable: {reason}", file.display());
            assert!(
                error_of(&e).starts_with(&expected),
                "{}: {e}",
                file.display()
            );
            assert!(e["hint"].is_string(), "{e}");
        }
        let missing = refused(&root, &dir.path().join("nowhere.bpf.o"), &[]);
        assert!(
            error_of(&missing).starts_with(&format!(
                "cannot read {}: No such file or directory",
                dir.path().join("nowhere.bpf.o").display()
            )),
            "{missing}"
        );

        // People read the same error on stderr.
        let human = root.meshbpf(&["load", empty.to_str().unwrap()]);
        assert_eq!(human.code, 1);
        assert!(human.stdout.is_empty(), "{human:?}");
        assert!(
            human.stderr.starts_with(&format!(
                "error: {} is not loadable: the file is empty\nhint: ",
                empty.display()
            )),
            "{human:?}"
        );
    }
);

privileged_test!(
    fn a_verifier_rejection_names_the_source_line_and_pins_nothing() {
        let root = PinRoot::new();
        let (dir, obj) = compile_fixture("verifier_reject");
        let log = dir.path().join("verifier.log");
        let e = refused(&root, &obj, &["--log", log.to_str().unwrap()]);
        assert_eq!(
            error_of(&e),
            format!(
                "the kernel verifier rejected program 'verifier_reject' of {}: Permission denied (os error 13)",
                obj.display()
            )
        );
        let detail = e["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("at verifier_reject.bpf.c:15: return data[14] == 1 ? 1 : 2;\n"),
            "{detail}"
        );
        assert!(detail.contains("invalid access to packet"), "{detail}");
        let full = fs::read_to_string(&log).unwrap();
        assert!(full.contains("-- BEGIN PROG LOAD LOG --"), "{full}");
        assert!(full.contains("invalid access to packet"), "{full}");
        assert!(full.contains("processed "), "the log is whole: {full}");

        // The first program loaded before the second was refused: all or nothing.
        let (_partial_dir, partial) = compile_fixture("load_partial");
        let e = refused(&root, &partial, &[]);
        assert_eq!(
            error_of(&e),
            format!(
                "the kernel verifier rejected program 'reads_past_the_end' of {}: Permission denied (os error 13)",
                partial.display()
            )
        );
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .starts_with("at load_partial.bpf.c:22: return data[20] == 1 ? 1 : 2;"),
            "{e}"
        );
    }
);

privileged_test!(
    fn names_globals_and_duplicates_are_checked() {
        let root = PinRoot::new();
        let (_dir, obj) = compile_fixture("load_counter");

        let e = refused(&root, &obj, &["--name", "a.b"]);
        assert_eq!(error_of(&e), "'a.b' is not a valid object name");
        let e = refused(&root, &obj, &["--set", "nosuch=1"]);
        assert_eq!(
            error_of(&e),
            "--set nosuch: the object has no global variable 'nosuch'"
        );
        assert_eq!(
            e["hint"],
            "its global variables: verdict (u32, .rodata), min_len (u8, .rodata), adjust (s32, .data)"
        );
        let e = refused(&root, &obj, &["--set", "min_len=256"]);
        assert_eq!(
            error_of(&e),
            "--set min_len=256: 256 does not fit an unsigned 8-bit variable (0 to 255)"
        );
        let e = refused(&root, &obj, &["--set", "verdict=-1"]);
        assert_eq!(
            error_of(&e),
            "--set verdict=-1: -1 does not fit an unsigned 32-bit variable (0 to 4294967295)"
        );
        let e = refused(&root, &obj, &["--set", "adjust=lots"]);
        assert_eq!(
            error_of(&e),
            "--set adjust=lots: 'lots' is not an integer (decimal, or hex with 0x)"
        );
        let usage = root.meshbpf(&["load", obj.to_str().unwrap(), "--set", "verdict", "-j"]);
        assert_eq!(
            usage.code, 2,
            "a malformed --set is a usage error: {usage:?}"
        );

        // What a killed load left is swept by the next one, and never listed.
        fs::create_dir_all(root.loaded().join("killed:loading")).unwrap();
        assert_eq!(
            root.meshbpf(&["list", "-j"]).ok().json(),
            serde_json::json!([])
        );
        // The default name comes from the file: load_counter.bpf.o is load_counter.
        let first = root
            .meshbpf(&["load", obj.to_str().unwrap(), "-j"])
            .ok()
            .json();
        assert_eq!(first["name"], "load_counter");
        assert_eq!(root.loaded_entries(), ["load_counter"]);
        let prog_id = &first["programs"][0]["prog_id"];
        let dup = root.meshbpf(&["load", obj.to_str().unwrap(), "-j"]);
        assert_eq!(dup.code, 1, "{dup:?}");
        let dup = dup.json();
        assert_eq!(
            error_of(&dup),
            format!(
                "duplicate NAME: an object named 'load_counter' is already loaded ({})",
                root.loaded().join("load_counter").display()
            )
        );
        assert_eq!(
            dup["hint"],
            "unload it first (meshbpf unload load_counter), or load this one under another --name"
        );
        let list = root.meshbpf(&["list", "-j"]).ok().json();
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        assert_eq!(
            &list[0]["programs"][0]["prog_id"], prog_id,
            "the first is untouched"
        );

        let attach = |args: &[&str]| {
            let r = root.meshbpf(args);
            assert_eq!(r.code, 1, "{r:?}");
            r.json()
        };
        let e = attach(&["attach", "--object", "nosuch", "-j"]);
        assert_eq!(error_of(&e), "no object named 'nosuch' is loaded");
        let e = attach(&["attach", "--object", "load_counter", "--prog", "nope", "-j"]);
        assert_eq!(error_of(&e), "object 'load_counter' has no program 'nope'");
        assert_eq!(e["hint"], "its programs: count_packets (xdp)");
        let e = attach(&["attach", "--object", "load_counter", "-j"]);
        assert_eq!(
            error_of(&e),
            "program 'count_packets' (xdp) attaches to an interface, and none was given"
        );
        assert_eq!(
            e["hint"],
            "meshbpf attach IFACE --object load_counter --prog count_packets"
        );
    }
);
