//! BTF: the kernel's, which CO-RE relocations in meshbpf's programs are
//! resolved against (or the operator's stand-in for it), and an opened
//! object's own.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use libbpf_rs::btf::Btf;
use libbpf_rs::{AsRawLibbpf, OpenMap, OpenObject};

use crate::error::Failure;
use crate::kernel::{ffi, files};

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// An operator's BTF file, opened and checked once. libbpf reads it again
/// by path, through /proc/self/fd, so that it reads the very file checked
/// here: a regular file within [`files::BTF`]'s cap that libbpf can parse.
pub struct CustomBtf {
    _file: File,
    fd_path: PathBuf,
}

impl CustomBtf {
    pub fn open(path: &Path) -> Result<Self> {
        let file = files::open(path, &files::BTF).map_err(|err| err.into_failure(path))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Err(err) = parse(&fd_path) {
            return Err(Failure::new(format!(
                "cannot use {} as BTF: it is neither raw BTF nor an ELF object with a .BTF section ({})",
                path.display(),
                libbpf_strerror(err)
            ))
            .hint("pass a vmlinux BTF file (raw BTF or an ELF with .BTF) for the running kernel, for example from BTFHub")
            .into());
        }
        Ok(CustomBtf {
            _file: file,
            fd_path,
        })
    }

    /// Where libbpf finds it while `self` lives.
    pub fn path(&self) -> &Path {
        &self.fd_path
    }
}

/// The BTF libbpf should use: the operator's file, or the kernel's own, which
/// libbpf finds by itself once we know it is there.
fn custom(custom: Option<&Path>) -> Result<Option<CustomBtf>> {
    if let Some(path) = custom {
        return CustomBtf::open(path).map(Some);
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
    /// What `raw.btf_custom_path` points to, if anything, and the file it
    /// names; a CString's bytes stay where they are when it moves.
    _btf: Option<(CustomBtf, CString)>,
}

impl OpenOpts {
    pub fn new(btf_file: Option<&Path>) -> Result<Self> {
        let btf = match custom(btf_file)? {
            Some(btf) => {
                let path = CString::new(btf.path().as_os_str().as_bytes())?;
                Some((btf, path))
            }
            None => None,
        };
        let mut raw: libbpf_sys::bpf_object_open_opts = ffi::opts();
        if let Some((_, path)) = &btf {
            raw.btf_custom_path = path.as_ptr();
        }
        Ok(OpenOpts { raw, _btf: btf })
    }

    /// For a skeleton's `open_opts`, while `self` lives: libbpf reads the
    /// BTF when the object loads.
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
        parse(Path::new(KERNEL_BTF))
            .map(|btf| KernelBtf { btf })
            .map_err(std::io::Error::from_raw_os_error)
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

/// libbpf's parse of a BTF file (raw, or an ELF's .BTF section); owned by
/// the caller. The error is libbpf's (an errno, or one of its own codes).
fn parse(path: &Path) -> std::result::Result<*mut libbpf_sys::btf, i32> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: a NUL-terminated path; libbpf returns an owned object or NULL
    // with errno set.
    let btf = unsafe { libbpf_sys::btf__parse(path.as_ptr(), std::ptr::null_mut()) };
    if btf.is_null() {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(btf)
}

/// libbpf's text for one of its error codes (4000 and up) or an errno.
fn libbpf_strerror(err: i32) -> String {
    let mut buf = [0u8; 128];
    // SAFETY: libbpf writes at most `buf.len()` bytes, NUL included.
    unsafe { libbpf_sys::libbpf_strerror(err, buf.as_mut_ptr().cast(), buf.len() as u64) };
    let text = CStr::from_bytes_until_nul(&buf)
        .map(|text| text.to_string_lossy().into_owned())
        .unwrap_or_default();
    if text.is_empty() {
        format!("error {err}")
    } else {
        text
    }
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        // SAFETY: owned since btf__parse, freed once.
        unsafe { libbpf_sys::btf__free(self.btf) }
    }
}
