//! The skeleton libbpf-cargo generates from bpf/tc_classifier.bpf.c (build.rs): the
//! object embedded in the binary, and Rust types for its BTF.

include!(concat!(env!("OUT_DIR"), "/tc_classifier.skel.rs"));
