//! The .deb that `make deb` builds (named by MESHBPF_DEB), unpacked with
//! `dpkg -x` into a scratch root: its binary, man pages, completions and
//! systemd units, and the units' commands run with exactly the capabilities
//! the units grant. `make test-deb` builds the package and runs this.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{must, run, Ran, VethPair, ADDR};

const UNIT_DIR: &str = "lib/systemd/system";
/// The units' StateDirectory, where filters keep their settled rule sets.
const STATE_DIR: &str = "/var/lib/meshbpf";

/// The package unpacked into a temporary root.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Unpacked {
    fn new() -> Self {
        let deb = std::env::var("MESHBPF_DEB")
            .expect("MESHBPF_DEB names the .deb to check: run this through `make test-deb`");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        must(&format!("dpkg -x {deb} {}", root.display()));
        Unpacked { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn bin(&self) -> PathBuf {
        self.path("usr/bin/meshbpf")
    }

    fn meshbpf(&self, args: &[&str]) -> Ran {
        Ran::from(run(Command::new(self.bin()).args(args)))
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel} in the package: {e}"))
    }

    fn unit(&self, name: &str) -> Unit {
        Unit::parse(&self.read(&format!("{UNIT_DIR}/{name}")))
    }
}

/// A unit file's settings, `Section.Key` to values in file order.
struct Unit(BTreeMap<String, Vec<String>>);

impl Unit {
    fn parse(text: &str) -> Self {
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {line}"));
            settings
                .entry(format!("{section}.{key}"))
                .or_default()
                .push(value.to_string());
        }
        Unit(settings)
    }

    fn get(&self, key: &str) -> &str {
        match self.0.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: expected one value, found {other:?}"),
        }
    }

    /// The capabilities in setpriv's notation: "-all,+bpf,+net_admin".
    fn setpriv_caps(&self) -> String {
        let caps = self.get("Service.AmbientCapabilities");
        assert_eq!(caps, self.get("Service.CapabilityBoundingSet"));
        std::iter::once("-all".to_string())
            .chain(
                caps.split_whitespace()
                    .map(|c| format!("+{}", c.strip_prefix("CAP_").unwrap().to_lowercase())),
            )
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `key`'s command line (instance `instance`) with the packaged
    /// binary, as systemd would; with `state_dir`, the unit's state
    /// directory is there instead of under /var/lib.
    fn exec(
        &self,
        key: &str,
        pkg: &Unpacked,
        net: &VethPair,
        instance: &str,
        state_dir: Option<&Path>,
    ) -> Ran {
        let mut line = self.get(key).replace("%i", instance);
        let mut command = self.command(pkg, net);
        if let Some(dir) = state_dir {
            line = line.replace(STATE_DIR, &dir.display().to_string());
            command.env("MESHBPF_STATE_DIR", dir);
        }
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("/usr/bin/meshbpf"), "{key}");
        Ran::from(run(command.args(words)))
    }

    /// Runs the packaged binary inside `net`'s namespace as root's uid
    /// holding only this unit's capabilities.
    fn run(&self, pkg: &Unpacked, net: &VethPair, args: &[&str]) -> Ran {
        Ran::from(run(self.command(pkg, net).args(args)))
    }

    fn command(&self, pkg: &Unpacked, net: &VethPair) -> Command {
        let caps = self.setpriv_caps();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", net.ns))
            .args(["--", "setpriv", "--no-new-privs"])
            .args(["--bounding-set", &caps, "--inh-caps", &caps, "--"])
            .arg(pkg.bin());
        command
    }
}

#[test]
fn the_package_holds_a_static_binary_man_pages_and_completions() {
    let pkg = Unpacked::new();
    let version = pkg.meshbpf(&["--version"]).ok();
    assert_eq!(
        version.stdout.trim(),
        format!("meshbpf {}", env!("CARGO_PKG_VERSION"))
    );
    let ldd = Ran::from(run(Command::new("ldd").arg(pkg.bin())));
    assert!(
        ldd.stdout.contains("not a dynamic executable")
            || ldd.stderr.contains("not a dynamic executable")
            || ldd.stdout.contains("statically linked"),
        "{ldd:?}"
    );

    // Every page the binary writes is in the package (gzipped, as Debian
    // ships man pages), byte for byte.
    let fresh = tempfile::tempdir().unwrap();
    let written = pkg
        .meshbpf(&["man", fresh.path().to_str().unwrap(), "-j"])
        .ok()
        .json();
    let written = written["written"].as_array().unwrap();
    assert!(written.len() > 10, "{written:?}");
    let man_dir = pkg.path("usr/share/man/man1");
    let mut packaged: Vec<String> = fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".gz")
                .unwrap_or_else(|| panic!("{name} is not gzipped"))
                .to_string()
        })
        .collect();
    packaged.sort();
    let mut expected: Vec<String> = written
        .iter()
        .map(|p| {
            let p = Path::new(p.as_str().unwrap());
            p.file_name().unwrap().to_str().unwrap().to_string()
        })
        .collect();
    expected.sort();
    assert_eq!(packaged, expected);
    assert!(packaged.contains(&"meshbpf-attach.1".to_string()));
    for page in &packaged {
        assert_eq!(
            run(Command::new("gzip")
                .arg("-dc")
                .arg(man_dir.join(format!("{page}.gz"))))
            .stdout,
            fs::read(fresh.path().join(page)).unwrap(),
            "{page}"
        );
    }

    for (shell, rel) in [
        ("bash", "usr/share/bash-completion/completions/meshbpf"),
        ("zsh", "usr/share/zsh/vendor-completions/_meshbpf"),
        ("fish", "usr/share/fish/vendor_completions.d/meshbpf.fish"),
    ] {
        let script = pkg.meshbpf(&["completions", shell]).ok().stdout;
        assert!(script.contains("attach"), "{shell}");
        assert_eq!(pkg.read(rel), script, "{rel}");
    }
}

#[test]
fn the_units_say_what_they_run_and_with_which_capabilities() {
    let pkg = Unpacked::new();
    let attach = pkg.unit("meshbpf-attach@.service");
    assert_eq!(attach.get("Service.Type"), "oneshot");
    assert_eq!(attach.get("Service.RemainAfterExit"), "yes");
    assert_eq!(
        attach.get("Service.ExecStart"),
        "/usr/bin/meshbpf attach %i"
    );
    assert_eq!(attach.get("Service.ExecStop"), "/usr/bin/meshbpf detach %i");
    assert_eq!(
        attach.get("Unit.BindsTo"),
        "sys-subsystem-net-devices-%i.device"
    );
    let serve = pkg.unit("meshbpf-serve.service");
    assert_eq!(
        serve.get("Service.ExecStart"),
        "/usr/bin/meshbpf serve --listen 127.0.0.1:9435"
    );
    assert_eq!(serve.get("Service.Restart"), "on-failure");
    let filter = pkg.unit("meshbpf-filter@.service");
    assert_eq!(
        filter.get("Service.ExecStart"),
        "/usr/bin/meshbpf attach %i --filter /var/lib/meshbpf/filter/%i.json"
    );
    // Before the network is configured, as a firewall is.
    assert_eq!(filter.get("Unit.DefaultDependencies"), "no");
    assert_eq!(filter.get("Unit.Wants"), "network-pre.target");
    assert_eq!(
        filter.get("Unit.Before"),
        "network-pre.target shutdown.target"
    );
    assert_eq!(
        filter.get("Unit.ConditionPathExists"),
        "/var/lib/meshbpf/filter/%i.json"
    );
    assert_eq!(filter.get("Service.StateDirectory"), "meshbpf");
    for unit in [&attach, &serve, &filter] {
        assert_eq!(
            unit.get("Service.AmbientCapabilities"),
            "CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN"
        );
        assert_eq!(unit.get("Service.NoNewPrivileges"), "yes");
        assert_eq!(unit.get("Service.ProtectSystem"), "strict");
        assert!(unit
            .get("Unit.RequiresMountsFor")
            .starts_with("/sys/fs/bpf"));
    }
}

/// systemd's own checker, on the units as installed: it parses them and
/// resolves the binary and the man pages they name inside the scratch root,
/// which also gets the host's units (the targets they depend on) beside them.
#[test]
fn systemd_analyze_verifies_the_units() {
    let pkg = Unpacked::new();
    fs::create_dir_all(pkg.path("usr/lib/systemd")).unwrap();
    must(&format!(
        "cp -a /lib/systemd/system {}",
        pkg.path("usr/lib/systemd").display()
    ));
    let unit_dir = pkg.path(UNIT_DIR);
    // A template is verified through an instance.
    for template in ["meshbpf-attach@", "meshbpf-filter@"] {
        fs::copy(
            unit_dir.join(format!("{template}.service")),
            unit_dir.join(format!("{template}eth0.service")),
        )
        .unwrap();
    }
    let verify = Ran::from(run(Command::new("systemd-analyze")
        .arg(format!("--root={}", pkg.root.display()))
        .env("MANPATH", pkg.path("usr/share/man"))
        .args([
            "verify",
            "meshbpf-attach@eth0.service",
            "meshbpf-filter@eth0.service",
            "meshbpf-serve.service",
        ])));
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(verify.stderr, "", "{verify:?}");
}

privileged_test!(
    /// The attach unit's ExecStart and ExecStop, run with only the unit's
    /// capabilities, attach, count real traffic and leave nothing behind.
    fn the_attach_units_capabilities_suffice_to_attach_count_and_detach() {
        let pkg = Unpacked::new();
        let attach = pkg.unit("meshbpf-attach@.service");
        let net = VethPair::new();
        attach
            .exec("Service.ExecStart", &pkg, &net, &net.dev, None)
            .ok();
        assert!(net.xdp_prog_id().is_some());
        net.send_udp(SocketAddr::new(ADDR.parse().unwrap(), 9), 7, 100);
        // serve reads what stats reads; it holds the same capabilities.
        let stats = pkg
            .unit("meshbpf-serve.service")
            .run(&pkg, &net, &["stats", &net.dev, "-j"])
            .ok()
            .json();
        assert_eq!(stats["l4"]["udp"]["packets"], 7);
        assert_eq!(stats["l4"]["udp"]["bytes"], 7 * (14 + 20 + 8 + 100));
        attach
            .exec("Service.ExecStop", &pkg, &net, &net.dev, None)
            .ok();
        assert_eq!(net.xdp_prog_id(), None);
        assert!(!net.pin_dir().exists());
    }
);

privileged_test!(
    /// A boot, as the filter unit sees it: the rule set `filter apply`
    /// settled on (not one still waiting for its confirmation) comes back
    /// with the unit's ExecStart after ExecStop took everything down.
    fn the_filter_unit_brings_back_the_last_settled_rule_set() {
        let pkg = Unpacked::new();
        let filter = pkg.unit("meshbpf-filter@.service");
        let net = VethPair::new();
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rules = |name: &str, dport: u16| {
            let path = dir.path().join(name);
            fs::write(
                &path,
                format!(r#"{{"rules": [{{"id": "drop-{dport}", "action": "deny", "protocol": "udp", "dport": {dport}}}]}}"#),
            )
            .unwrap();
            path.display().to_string()
        };
        let (settled, pending) = (rules("settled.json", 9), rules("pending.json", 7));
        let as_unit = |args: &[&str]| {
            let mut all = vec!["--state-dir", state.path().to_str().unwrap()];
            all.extend_from_slice(args);
            filter.run(&pkg, &net, &all).ok()
        };
        as_unit(&["attach", &net.dev, "--filter", &settled]);
        as_unit(&["filter", "apply", &net.dev, &pending, "--confirm", "1h"]);
        filter
            .exec("Service.ExecStop", &pkg, &net, &net.dev, Some(state.path()))
            .ok();
        assert_eq!(net.xdp_prog_id(), None);
        filter
            .exec(
                "Service.ExecStart",
                &pkg,
                &net,
                &net.dev,
                Some(state.path()),
            )
            .ok();
        let shown = as_unit(&["filter", "show", &net.dev, "-j"]).json();
        assert_eq!(shown["rules"][0]["id"], "drop-9", "{shown}");
        assert_eq!(shown["rules"].as_array().unwrap().len(), 1, "{shown}");
        net.send_udp(SocketAddr::new(ADDR.parse().unwrap(), 9), 5, 10);
        let shown = as_unit(&["filter", "show", &net.dev, "-j"]).json();
        assert_eq!(shown["rules"][0]["packets"], 5, "{shown}");
        filter
            .exec("Service.ExecStop", &pkg, &net, &net.dev, Some(state.path()))
            .ok();
    }
);

/// Runs the packaged binary as the only file of a root directory, as in the
/// image deploy/kubernetes/Containerfile builds (FROM scratch), with the
/// host's /sys and a /proc as a container runtime provides them, inside
/// `net`'s namespace.
fn alone_in_a_root(pkg: &Unpacked, net: &VethPair, args: &str) -> Ran {
    let image = tempfile::tempdir().unwrap();
    let root = image.path().display();
    common::in_private_mounts(&format!(
        "mkdir -p {root}/usr/bin {root}/sys {root}/proc
         cp {bin} {root}/usr/bin/meshbpf
         mount --rbind /sys {root}/sys
         mount -t proc proc {root}/proc
         exec nsenter --net=/run/netns/{ns} -- chroot {root} /usr/bin/meshbpf {args}",
        bin = pkg.bin().display(),
        ns = net.ns,
    ))
}

privileged_test!(
    fn the_static_binary_needs_no_file_beside_itself() {
        let pkg = Unpacked::new();
        let net = VethPair::new();
        let attached = alone_in_a_root(&pkg, &net, &format!("attach {} -j", net.dev))
            .ok()
            .json();
        assert_eq!(net.xdp_prog_id(), attached["prog_id"].as_u64());
        net.send_udp(SocketAddr::new(ADDR.parse().unwrap(), 9), 5, 100);
        let stats = alone_in_a_root(&pkg, &net, &format!("stats {} -j", net.dev))
            .ok()
            .json();
        assert_eq!(stats["l4"]["udp"]["packets"], 5);
        alone_in_a_root(&pkg, &net, &format!("detach {}", net.dev)).ok();
        assert_eq!(net.xdp_prog_id(), None);
        assert!(!net.pin_dir().exists());
    }
);
