//! Capturing libbpf's output so a failed load explains itself.
//!
//! A failed BPF_PROG_LOAD returns a bare errno; the verifier's log only
//! reaches libbpf's print callback. We keep what libbpf printed during a load
//! and, on failure, turn it into an excerpt that ends at the rejection and
//! names the C source line when the object carries BTF line info.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::Context;
use libbpf_rs::PrintLevel;

use crate::error::{errno_of, Failure};
use crate::kernel::caps;

thread_local! {
    /// libbpf prints on the thread that calls it, so each thread's loads
    /// capture their own messages, even when two threads load at once.
    static LIBBPF_OUTPUT: RefCell<String> = const { RefCell::new(String::new()) };
}

const BEGIN_LOG: &str = "-- BEGIN PROG LOAD LOG --";
const END_LOG: &str = "-- END PROG LOAD LOG --";
const EXCERPT_LINES: usize = 10;

fn on_libbpf_print(level: PrintLevel, msg: String) {
    match level {
        PrintLevel::Warn => log::info!(target: "libbpf", "{}", msg.trim_end()),
        PrintLevel::Info => log::debug!(target: "libbpf", "{}", msg.trim_end()),
        PrintLevel::Debug => log::trace!(target: "libbpf", "{}", msg.trim_end()),
    }
    LIBBPF_OUTPUT.with(|out| out.borrow_mut().push_str(&msg));
}

/// Routes libbpf's messages through the capture buffer and the logger.
pub fn install() {
    libbpf_rs::set_print(Some((PrintLevel::Debug, on_libbpf_print)));
}

/// Runs a libbpf load and, if it fails, explains why with what libbpf printed.
pub fn load<T>(what: &str, load: impl FnOnce() -> libbpf_rs::Result<T>) -> anyhow::Result<T> {
    load_logged(what, None, load)
}

/// [`load`], also writing everything libbpf printed (the whole verifier
/// log, on a rejection) to `log`.
pub fn load_logged<T>(
    what: &str,
    log: Option<&Path>,
    load: impl FnOnce() -> libbpf_rs::Result<T>,
) -> anyhow::Result<T> {
    take_output();
    let result = load();
    let printed = take_output();
    if let Some(path) = log {
        fs::write(path, &printed)
            .with_context(|| format!("writing libbpf's log to {}", path.display()))?;
    }
    result.map_err(|err| explain_failed_load(what, anyhow::Error::new(err), &printed))
}

/// The program of an object that libbpf failed to load, as a layer of the
/// error, for callers that explain refusals by program type.
#[derive(Debug)]
pub struct FailedProgram(pub String);

impl fmt::Display for FailedProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program '{}'", self.0)
    }
}

impl std::error::Error for FailedProgram {}

/// libbpf names the program it could not load: `prog 'NAME': ... failed`.
fn failed_program(printed: &str) -> Option<&str> {
    printed.lines().find_map(|line| {
        let rest = line.strip_prefix("libbpf: prog '")?;
        let (name, tail) = rest.split_once("': ")?;
        (tail.contains("load failed") || tail.starts_with("failed to load")).then_some(name)
    })
}

fn take_output() -> String {
    LIBBPF_OUTPUT.with(|out| out.take())
}

fn explain_failed_load(what: &str, err: anyhow::Error, printed: &str) -> anyhow::Error {
    // An object's program is named beside the object.
    let program = failed_program(printed).filter(|p| *p != what);
    if let Some(log) = verifier_log(printed) {
        let excerpt = excerpt(log);
        let subject = match program {
            Some(p) => format!("program '{p}' of {what}"),
            None => what.to_string(),
        };
        let mut failure = Failure::new(format!("the kernel verifier rejected {subject}"));
        let mut detail = String::new();
        if let Some(source) = &excerpt.source {
            detail.push_str(&format!("at {source}\n"));
        }
        detail.push_str("verifier log (end):\n");
        for line in &excerpt.lines {
            detail.push_str(&format!("  {line}\n"));
        }
        failure = failure
            .detail(detail.trim_end())
            .hint("run with -v to print the full verifier log");
        return err.context(failure);
    }
    let err = match program {
        Some(p) => err.context(FailedProgram(p.to_string())),
        None => err,
    };
    if errno_of(&err) == Some(libc::EPERM) {
        return err.context(caps::explain_eperm(&format!("load {what}")));
    }
    let warnings: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = warnings[warnings.len().saturating_sub(EXCERPT_LINES)..].join("\n");
    let failure = Failure::new(format!("libbpf could not load {what}"))
        .hint("run with -v for libbpf's full output");
    let failure = if tail.is_empty() {
        failure
    } else {
        failure.detail(tail)
    };
    err.context(failure)
}

/// The verifier's own log between libbpf's markers, if a load printed one.
fn verifier_log(printed: &str) -> Option<&str> {
    let start = printed.find(BEGIN_LOG)? + BEGIN_LOG.len();
    let end = printed[start..]
        .find(END_LOG)
        .map(|e| start + e)
        .unwrap_or(printed.len());
    Some(printed[start..end].trim_matches('\n'))
}

#[derive(Debug, PartialEq)]
pub struct Excerpt {
    /// `file:line: source text` of the last source annotation before the rejection.
    pub source: Option<String>,
    /// The log's last lines up to the rejection message.
    pub lines: Vec<String>,
}

/// Statistics the verifier appends after its verdict; not part of the story.
fn is_trailer(line: &str) -> bool {
    [
        "processed ",
        "verification time",
        "stack depth",
        "max_states_per_insn",
        "mark_precise",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

pub fn excerpt(log: &str) -> Excerpt {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let end = lines
        .iter()
        .rposition(|l| !is_trailer(l))
        .map(|i| i + 1)
        .unwrap_or(lines.len());
    let body = &lines[..end];
    let source = body.iter().rev().find_map(|l| source_annotation(l));
    let start = end.saturating_sub(EXCERPT_LINES);
    Excerpt {
        source,
        lines: body[start..].iter().map(|l| l.to_string()).collect(),
    }
}

/// The verifier prints BTF line info as `; <source text> @ <file>:<line>`.
fn source_annotation(line: &str) -> Option<String> {
    let annotated = line.strip_prefix("; ")?;
    let (text, location) = annotated.rsplit_once(" @ ")?;
    Some(format!("{location}: {}", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REJECTED: &str = "libbpf: prog 'bad': BPF program load failed: Permission denied\n\
libbpf: prog 'bad': -- BEGIN PROG LOAD LOG --\n\
0: R1=ctx() R10=fp0\n\
; void *data = (void *)(long)ctx->data; @ bad.bpf.c:9\n\
0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2_w=pkt(r=0)\n\
; return *(__u8 *)(data + 14) == 1 ? XDP_DROP : XDP_PASS; @ bad.bpf.c:11\n\
1: (71) r1 = *(u8 *)(r2 +14)\n\
invalid access to packet, off=14 size=1, R2(id=0,off=14,r=0)\n\
R2 offset is outside of the packet\n\
processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n\
-- END PROG LOAD LOG --\n\
libbpf: prog 'bad': failed to load: -13\n";

    #[test]
    fn the_excerpt_ends_at_the_rejection_and_names_the_source_line() {
        let log = verifier_log(REJECTED).expect("markers present");
        let ex = excerpt(log);
        assert_eq!(
            ex.source.as_deref(),
            Some("bad.bpf.c:11: return *(__u8 *)(data + 14) == 1 ? XDP_DROP : XDP_PASS;")
        );
        assert_eq!(
            ex.lines.last().map(String::as_str),
            Some("R2 offset is outside of the packet")
        );
        assert!(ex.lines.iter().all(|l| !l.starts_with("processed")));
    }

    #[test]
    fn a_log_without_line_info_still_gives_an_excerpt() {
        let ex = excerpt("0: (b7) r0 = 0\nR0 !read_ok\nprocessed 1 insns\n");
        assert_eq!(ex.source, None);
        assert_eq!(ex.lines, vec!["0: (b7) r0 = 0", "R0 !read_ok"]);
    }

    #[test]
    fn the_failed_program_is_named_from_libbpfs_output() {
        assert_eq!(failed_program(REJECTED), Some("bad"));
        assert_eq!(
            failed_program("libbpf: prog 'fe': BPF program load failed: Operation not permitted\n"),
            Some("fe")
        );
        assert_eq!(
            failed_program("libbpf: failed to find valid kernel BTF\n"),
            None
        );
    }

    #[test]
    fn output_without_markers_has_no_verifier_log() {
        assert_eq!(
            verifier_log("libbpf: failed to find valid kernel BTF\n"),
            None
        );
    }
}
