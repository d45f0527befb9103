//! Kernel BTF: CO-RE relocations in meshbpf's programs are resolved against it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;

use crate::error::Failure;

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF libbpf should use: the operator's file, or the kernel's own, which
/// libbpf finds by itself once we know it is there.
pub fn custom_path(custom: Option<&Path>) -> Result<Option<CString>> {
    if let Some(path) = custom {
        if !path.is_file() {
            return Err(Failure::new(format!("BTF file {} does not exist", path.display()))
                .hint("pass a vmlinux BTF file (raw BTF or an ELF with .BTF), for example from BTFHub")
                .into());
        }
        return Ok(Some(CString::new(path.as_os_str().as_bytes())?));
    }
    if !Path::new(KERNEL_BTF).is_file() {
        return Err(Failure::new(format!(
            "this kernel exposes no BTF at {KERNEL_BTF}, which meshbpf's CO-RE programs need"
        ))
        .hint("boot a kernel built with CONFIG_DEBUG_INFO_BTF=y, or pass a matching vmlinux BTF with --btf FILE (MESHBPF_BTF)")
        .into());
    }
    Ok(None)
}
