//! BTF: the kernel's, which CO-RE relocations in meshbpf's programs are
//! resolved against (or the operator's stand-in for it), and an opened
//! object's own.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;
use libbpf_rs::btf::Btf;
use libbpf_rs::{AsRawLibbpf, OpenMap, OpenObject};

use crate::error::Failure;
use crate::kernel::ffi;

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF libbpf should use: the operator's file, or the kernel's own, which
/// libbpf finds by itself once we know it is there.
fn custom_path(custom: Option<&Path>) -> Result<Option<CString>> {
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

/// Open options shared by every skeleton: the BTF to resolve against. The
/// libbpf struct points into the path held here, so it is lent out only.
pub struct OpenOpts {
    raw: libbpf_sys::bpf_object_open_opts,
    /// What `raw.btf_custom_path` points to, if anything; a CString's bytes
    /// stay where they are when it moves.
    _btf_path: Option<CString>,
}

impl OpenOpts {
    pub fn new(btf_file: Option<&Path>) -> Result<Self> {
        let btf_path = custom_path(btf_file)?;
        let mut raw: libbpf_sys::bpf_object_open_opts = ffi::opts();
        if let Some(path) = &btf_path {
            raw.btf_custom_path = path.as_ptr();
        }
        Ok(OpenOpts {
            raw,
            _btf_path: btf_path,
        })
    }

    /// For a skeleton's `open_opts`, while `self` lives: libbpf copies the
    /// path during the open.
    pub fn as_raw(&self) -> &libbpf_sys::bpf_object_open_opts {
        &self.raw
    }
}

/// An opened object's BTF, if it has any.
pub fn of_object(open: &OpenObject) -> Result<Option<Btf<'_>>> {
    // SAFETY: a live object; the signature ties the BTF's borrow of it to
    // `open`.
    let object = unsafe { open.as_libbpf_object().as_ref() };
    Ok(Btf::from_bpf_object(object)?)
}

/// The BTF id of a map's value type: for a global data map (.data,
/// .rodata, .bss), its data section.
pub fn value_type_id(map: &OpenMap<'_>) -> u32 {
    // SAFETY: a live map of an opened object.
    unsafe { libbpf_sys::bpf_map__btf_value_type_id(map.as_libbpf_object().as_ptr()) }
}

/// The running kernel's BTF, parsed by libbpf: type ids for programs that
/// attach by BTF id (tp_btf, fentry, LSM).
pub struct KernelBtf {
    btf: *mut libbpf_sys::btf,
}

impl KernelBtf {
    pub fn open() -> std::io::Result<Self> {
        let path = CString::new(KERNEL_BTF).expect("no NUL in a constant path");
        // SAFETY: libbpf returns an owned object or NULL with errno set.
        let btf = unsafe { libbpf_sys::btf__parse(path.as_ptr(), std::ptr::null_mut()) };
        if btf.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(KernelBtf { btf })
    }

    pub fn type_count(&self) -> u32 {
        // SAFETY: a live object from btf__parse.
        unsafe { libbpf_sys::btf__type_cnt(self.btf) }
    }

    /// The id of the type `name` of kind `kind` (`libbpf_sys::BTF_KIND_*`).
    pub fn find(&self, name: &str, kind: u32) -> Option<u32> {
        let name = CString::new(name).ok()?;
        // SAFETY: a live object and a NUL-terminated name.
        let id = unsafe { libbpf_sys::btf__find_by_name_kind(self.btf, name.as_ptr(), kind) };
        u32::try_from(id).ok().filter(|&id| id > 0)
    }
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        // SAFETY: owned since btf__parse, freed once.
        unsafe { libbpf_sys::btf__free(self.btf) }
    }
}
