//! Every file an operator hands meshbpf (rules, QoS classes, LSM policies,
//! BPF objects, BTF) is opened here: only a regular file, and only up to a
//! cap for its kind, so that a FIFO cannot hang a command and /dev/zero
//! cannot grow it until the OOM killer ends it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Failure;

const MIB: u64 = 1024 * 1024;

/// What a file is for, and the most meshbpf reads of it.
#[derive(Debug)]
pub struct Kind {
    pub name: &'static str,
    pub cap: u64,
    /// What to do when the file cannot be opened at all.
    pub open_hint: &'static str,
}

const READABLE: &str = "check the path, and that this user may read the file";

/// A 10,000-rule filter is well under 1 MiB; the caps leave room for
/// generated files while refusing what cannot be a rule file.
pub const FILTER_RULES: Kind = Kind {
    name: "filter rules",
    cap: 16 * MIB,
    open_hint: READABLE,
};
/// A million IPv6 CIDRs with TTLs are about 50 MiB.
pub const BAN_LIST: Kind = Kind {
    name: "ban lists",
    cap: 256 * MIB,
    open_hint: READABLE,
};
pub const QOS_CLASSES: Kind = Kind {
    name: "QoS classes",
    cap: 16 * MIB,
    open_hint: READABLE,
};
pub const LSM_POLICY: Kind = Kind {
    name: "LSM policies",
    cap: 16 * MIB,
    open_hint: READABLE,
};
/// Objects with BTF and debug info are a few MiB at most.
pub const BPF_OBJECT: Kind = Kind {
    name: "BPF objects",
    cap: 64 * MIB,
    open_hint: "pass the path of a compiled BPF object (.bpf.o)",
};
/// A kernel's vmlinux BTF is 5-10 MiB.
pub const BTF: Kind = Kind {
    name: "BTF files",
    cap: 64 * MIB,
    open_hint: "pass a vmlinux BTF file (raw BTF or an ELF with .BTF), for example from BTFHub",
};

/// Why an input file was refused: `reason` completes "cannot read FILE: ".
#[derive(Debug)]
pub struct InputError {
    pub reason: String,
    pub hint: String,
}

impl InputError {
    /// The refusal as a failure that names the file.
    pub fn into_failure(self, path: &Path) -> Failure {
        Failure::new(format!("cannot read {}: {}", path.display(), self.reason)).hint(self.hint)
    }
}

/// Opens `path` as a `kind` file: a regular file of at most the kind's cap.
pub fn open(path: &Path, kind: &Kind) -> Result<File, InputError> {
    // Non-blocking, so opening a FIFO without a writer returns at once and
    // fstat can refuse it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| InputError {
            reason: err.to_string(),
            hint: kind.open_hint.into(),
        })?;
    let meta = file.metadata().map_err(|err| InputError {
        reason: err.to_string(),
        hint: kind.open_hint.into(),
    })?;
    if !meta.file_type().is_file() {
        return Err(InputError {
            reason: format!(
                "it is {}, not a regular file; meshbpf reads {} only from regular files",
                file_type_name(&meta.file_type()),
                kind.name
            ),
            hint: "save it to a regular file and pass that path: a pipe, a device or a directory could block or never end".into(),
        });
    }
    if meta.len() > kind.cap {
        return Err(too_big(kind, meta.len()));
    }
    Ok(file)
}

/// Reads all of a `kind` file (see [`open`]), never more than its cap even
/// if the file grows meanwhile.
pub fn read(path: &Path, kind: &Kind) -> Result<Vec<u8>, InputError> {
    let file = open(path, kind)?;
    let mut bytes = Vec::new();
    file.take(kind.cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| InputError {
            reason: err.to_string(),
            hint: kind.open_hint.into(),
        })?;
    if bytes.len() as u64 > kind.cap {
        return Err(too_big(kind, bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, kind: &Kind) -> Result<String, InputError> {
    String::from_utf8(read(path, kind)?).map_err(|err| InputError {
        reason: format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        ),
        hint: format!("{} are JSON, which is UTF-8", kind.name),
    })
}

fn too_big(kind: &Kind, size: u64) -> InputError {
    InputError {
        reason: format!(
            "it is over the {} MiB limit for {} ({} bytes)",
            kind.cap / MIB,
            kind.name,
            size
        ),
        hint: format!(
            "check that this is the right file: {} are far smaller than {} MiB",
            kind.name,
            kind.cap / MIB
        ),
    }
}

fn file_type_name(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.json");
        std::fs::write(&file, b"{}").unwrap();
        assert_eq!(read(&file, &FILTER_RULES).unwrap(), b"{}");

        let refused = |path: &Path, kind: &Kind| read(path, kind).unwrap_err().reason;
        assert_eq!(
            refused(dir.path(), &FILTER_RULES),
            "it is a directory, not a regular file; meshbpf reads filter rules only from regular files"
        );
        assert_eq!(
            refused(Path::new("/dev/zero"), &BPF_OBJECT),
            "it is a character device, not a regular file; meshbpf reads BPF objects only from regular files"
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(refused(&fifo, &BTF).starts_with("it is a FIFO, not a regular file"));

        let big = dir.path().join("big.json");
        File::create(&big).unwrap().set_len(16 * MIB + 1).unwrap();
        assert_eq!(
            refused(&big, &QOS_CLASSES),
            "it is over the 16 MiB limit for QoS classes (16777217 bytes)"
        );
        assert_eq!(
            refused(&dir.path().join("missing"), &LSM_POLICY),
            "No such file or directory (os error 2)"
        );
    }
}
