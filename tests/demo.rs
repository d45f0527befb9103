//! `make demo` must keep working and keep cleaning up: run it as a test.

mod common;

use common::{BIN, ROOT};

privileged_test!(
    fn the_demo_counts_its_traffic_and_leaves_nothing_behind() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo.sh");
        let r = common::Ran::from(common::run(
            std::process::Command::new("bash").arg(script).arg(BIN),
        ));
        assert_eq!(r.code, 0, "{r:?}");
        // 20 datagrams of 100 bytes: 14 + 20 + 8 + 100 bytes on the wire each.
        assert!(
            r.stdout
                .contains(r#"l4.udp = {"packets": 20, "bytes": 2840}"#),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains(r#"l4.icmp = {"packets": 3, "bytes": 294}"#),
            "{}",
            r.stdout
        );
        let dev = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("pins left for "))
            .expect("demo reports its pins");
        let (dev, left) = dev.split_once(": ").unwrap();
        assert_eq!(left, "0");
        assert!(!std::path::Path::new(ROOT).join("net").join(dev).exists());
        let namespaces = common::sh("ip netns list");
        let id = dev.trim_end_matches('a');
        assert!(
            !String::from_utf8_lossy(&namespaces.stdout).contains(id),
            "demo namespaces were removed"
        );
    }
);
