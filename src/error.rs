//! Errors that carry what an operator should do next.
//!
//! Every failure is an `anyhow::Error`; the ones raised on purpose carry a
//! [`Failure`] somewhere in their chain, which adds a hint and, for verifier
//! rejections, a multi-line detail. `output` renders both.

use std::fmt;

#[derive(Debug)]
pub struct Failure {
    message: String,
    hint: Option<String>,
    detail: Option<String>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            hint: None,
            detail: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The operator pressed Ctrl-C: not a failure to report, exit 130.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// The command's own output already says what is wrong (`health --strict`
/// finding a failed check): exit 1 without printing an error on top of it.
#[derive(Debug)]
pub struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reported in the output")
    }
}

impl std::error::Error for Reported {}

/// What `output` needs to show an error: the whole chain on one line, plus the
/// hint and detail of the outermost [`Failure`], whether it was raised as the
/// error or added as context.
pub struct Explained {
    pub message: String,
    pub hint: Option<String>,
    pub detail: Option<String>,
}

pub fn explain(err: &anyhow::Error) -> Explained {
    // anyhow finds context layers this way; `chain()` would hide their types.
    let failure = err.downcast_ref::<Failure>();
    Explained {
        message: format!("{err:#}"),
        hint: failure.and_then(|f| f.hint.clone()),
        detail: failure.and_then(|f| f.detail.clone()),
    }
}

/// The errno behind an error, if any layer of it came from a syscall.
pub fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|e| {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        if let Some(nix) = e.downcast_ref::<nix::errno::Errno>() {
            return Some(*nix as i32);
        }
        e.downcast_ref::<libbpf_rs::Error>()
            .map(|lb| lb.kind())
            .and_then(errno_of_libbpf_kind)
    })
}

fn errno_of_libbpf_kind(kind: libbpf_rs::ErrorKind) -> Option<i32> {
    use libbpf_rs::ErrorKind::*;
    Some(match kind {
        NotFound => libc::ENOENT,
        PermissionDenied => libc::EPERM,
        AlreadyExists => libc::EEXIST,
        WouldBlock => libc::EAGAIN,
        InvalidInput => libc::EINVAL,
        Unsupported => libc::EOPNOTSUPP,
        OutOfMemory => libc::ENOMEM,
        Interrupted => libc::EINTR,
        TimedOut => libc::ETIMEDOUT,
        _ => return None,
    })
}

/// Levenshtein distance, for did-you-mean hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn explain_joins_the_chain_and_keeps_the_hint() {
        let err =
            anyhow::Error::new(Failure::new("no such interface").hint("list them with `ip link`"))
                .context("attach xdp_counter to eth9");
        let explained = explain(&err);
        assert_eq!(
            explained.message,
            "attach xdp_counter to eth9: no such interface"
        );
        assert_eq!(explained.hint.as_deref(), Some("list them with `ip link`"));
        assert_eq!(explained.detail, None);
    }

    #[test]
    fn a_failure_added_as_context_is_found_too() {
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES))
            .context(Failure::new("the kernel verifier rejected x").detail("at x.bpf.c:3"))
            .context("attach");
        let explained = explain(&err);
        assert_eq!(explained.detail.as_deref(), Some("at x.bpf.c:3"));
        assert!(explained
            .message
            .starts_with("attach: the kernel verifier rejected x: "));
    }

    #[test]
    fn errno_is_found_through_context_layers() {
        let err: anyhow::Result<()> = Err(std::io::Error::from_raw_os_error(libc::EPERM).into());
        let err = err.context("pin map").unwrap_err();
        assert_eq!(errno_of(&err), Some(libc::EPERM));
        assert_eq!(errno_of(&anyhow::anyhow!("plain")), None);
    }
}
