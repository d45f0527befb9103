//! The skeleton libbpf-cargo generates from bpf/xdp_mesh_filter.bpf.c (build.rs): the
//! object embedded in the binary, and Rust types for its BTF.

include!(concat!(env!("OUT_DIR"), "/xdp_mesh_filter.skel.rs"));
