//! Everything meshbpf asks of the running kernel beyond a skeleton's own
//! calls: mounts, capabilities, interfaces, pins, object info and the
//! verifier log.

pub mod bpffs;
pub mod bpfobj;
pub mod btf;
pub mod caps;
pub mod clock;
pub mod netdev;
pub mod pins;
pub mod syscalls;
pub mod tc;
pub mod verifier;
pub mod xdp;
