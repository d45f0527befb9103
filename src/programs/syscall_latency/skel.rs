//! The skeleton libbpf-cargo generates from bpf/syscall_latency.bpf.c (build.rs): the
//! object embedded in the binary, and Rust types for its BTF.

include!(concat!(env!("OUT_DIR"), "/syscall_latency.skel.rs"));
