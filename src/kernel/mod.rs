//! Everything meshbpf asks of the running kernel beyond a skeleton's own
//! calls: mounts, capabilities, interfaces, pins, object info, the
//! verifier log, hook probes and what the kernel says about itself. The
//! only place with `unsafe`: each use says why it holds, behind a safe
//! function.

pub mod bpffs;
pub mod bpfobj;
pub mod btf;
pub mod caps;
pub mod clock;
pub mod elf;
pub mod ffi;
pub mod files;
pub mod hooks;
pub mod links;
pub mod maps;
pub mod mounts;
pub mod netdev;
pub mod pins;
pub mod pod;
pub mod probe;
pub mod ringbuf;
pub mod runstats;
pub mod signals;
pub mod syscalls;
pub mod sysinfo;
pub mod tc;
pub mod term;
pub mod tracefs;
pub mod verifier;
pub mod xdp;
