//! The skeleton libbpf-cargo generates from bpf/xdp_counter.bpf.c (build.rs): the
//! object embedded in the binary, and Rust types for its BTF.

include!(concat!(env!("OUT_DIR"), "/xdp_counter.skel.rs"));
