//! The skeleton libbpf-cargo generates from bpf/lsm_monitor.bpf.c (build.rs): the
//! object embedded in the binary, and Rust types for its BTF.

include!(concat!(env!("OUT_DIR"), "/lsm_monitor.skel.rs"));
