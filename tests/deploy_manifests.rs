//! deploy/kubernetes/daemonset.yaml, parsed: the pieces a node needs
//! (host network, capabilities, bpffs and BTF mounts), the pieces Prometheus
//! needs (annotations, port, listen address) and the pod's limits and probes.
//! No cluster runs here: this checks the manifest, not a deployment.

use serde::Deserialize;
use serde_yaml::Value;

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/daemonset.yaml"
);
const ATTACH_UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/systemd/meshbpf-attach@.service"
);

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(MANIFEST).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn daemonset() -> Value {
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "DaemonSet"]);
    assert_eq!(docs[0]["metadata"]["name"], "meshbpf");
    assert_eq!(docs[1]["apiVersion"], "apps/v1");
    assert_eq!(docs[1]["metadata"]["namespace"], "meshbpf");
    docs[1].clone()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The capabilities the systemd units grant, in Kubernetes' spelling.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(ATTACH_UNIT).unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap();
    caps.split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap().to_string())
        .collect()
}

#[test]
fn the_daemonset_runs_on_the_host_network_with_the_units_capabilities() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");

    // `health --strict` gates the attach: a failing check stops the pod in Init.
    let names: Vec<&str> = pod["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["health", "attach"]);
    let health = &pod["initContainers"][0];
    assert_eq!(
        strings(&health["command"]),
        ["/usr/bin/meshbpf", "health", "--strict"]
    );
    let init = &pod["initContainers"][1];
    let serve = &pod["containers"][0];
    assert_eq!(
        strings(&init["command"]),
        ["/usr/bin/meshbpf", "attach", "$(MESHBPF_INTERFACE)"]
    );
    assert_eq!(init["env"][0]["name"], "MESHBPF_INTERFACE");
    let image = format!("meshbpf:{}", env!("CARGO_PKG_VERSION"));
    for container in [health, init, serve] {
        assert_eq!(container["image"].as_str(), Some(image.as_str()));
        let security = &container["securityContext"];
        assert_eq!(security["privileged"], false);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(
            strings(&security["capabilities"]["add"]),
            unit_capabilities()
        );

        let mounts = container["volumeMounts"].as_sequence().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0]["name"], "bpffs");
        assert_eq!(mounts[0]["mountPath"], "/sys/fs/bpf");
        assert_eq!(mounts[0]["mountPropagation"], "HostToContainer");
        assert_eq!(mounts[1]["name"], "btf");
        assert_eq!(mounts[1]["mountPath"], "/sys/kernel/btf");
        assert_eq!(mounts[1]["readOnly"], true);

        let resources = &container["resources"];
        assert_eq!(resources["requests"]["cpu"], "50m");
        assert_eq!(resources["requests"]["memory"], "64Mi");
        assert_eq!(resources["limits"]["cpu"], "500m");
        assert_eq!(resources["limits"]["memory"], "256Mi");
    }
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0]["name"], "bpffs");
    assert_eq!(volumes[0]["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(volumes[1]["name"], "btf");
    assert_eq!(volumes[1]["hostPath"]["path"], "/sys/kernel/btf");
    for volume in volumes {
        assert_eq!(volume["hostPath"]["type"], "Directory");
    }
}

#[test]
fn prometheus_finds_serve_on_the_node_address_and_the_probes_ask_it() {
    let ds = daemonset();
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9435");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let serve = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        strings(&serve["command"]),
        ["/usr/bin/meshbpf", "serve", "--listen", "$(POD_IP):9435"]
    );
    assert_eq!(serve["env"][0]["name"], "POD_IP");
    assert_eq!(
        serve["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(serve["ports"][0]["name"], "metrics");
    assert_eq!(serve["ports"][0]["containerPort"], 9435);

    let readiness = &serve["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/healthz");
    assert_eq!(readiness["port"], "metrics");
    assert_eq!(serve["livenessProbe"]["tcpSocket"]["port"], "metrics");
}
