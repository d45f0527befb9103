//! meshbpf: attach meshbpf's own CO-RE eBPF programs through libbpf and read
//! back what they count. The binary is a thin shell around [`commands::run`].

pub mod cli;
pub mod commands;
pub mod error;
pub mod health;
pub mod interrupt;
pub mod inventory;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pcapng;
pub mod programs;
pub mod proto;
pub mod rules;
pub mod snapshot;
pub mod state;
