//! Syscall names and numbers of the architecture meshbpf was built for.
//! Numbers differ between architectures (read is 0 on x86_64, 63 on
//! aarch64), so on an architecture without a table names are refused
//! rather than guessed; numbers still work there.

use crate::error::edit_distance;
use crate::error::Failure;

mod tables;

/// An arch's names: its own table, then the numbers every arch shares.
type Table = [&'static [(u32, &'static str)]; 2];

#[cfg(target_arch = "x86_64")]
const TABLE: Option<Table> = Some([tables::X86_64, tables::UNIFIED]);
#[cfg(target_arch = "aarch64")]
const TABLE: Option<Table> = Some([tables::AARCH64, tables::UNIFIED]);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TABLE: Option<Table> = None;

fn entries(table: &Table) -> impl Iterator<Item = &(u32, &'static str)> {
    table.iter().flat_map(|part| part.iter())
}

/// The name of syscall `nr`, if this build knows it.
pub fn name_of(nr: u32) -> Option<&'static str> {
    table_name(&TABLE?, nr)
}

/// A name as shown: the syscall's own, or `syscall_<nr>` for one this build
/// does not know.
pub fn display_name(nr: u32) -> String {
    name_of(nr).map_or_else(|| format!("syscall_{nr}"), str::to_string)
}

/// The number of a syscall given by name (`read`, `sys_read`), by number, or
/// as [`display_name`] prints an unknown one (`syscall_470`).
pub fn resolve(name: &str) -> Result<u32, Failure> {
    resolve_in(TABLE, name)
}

/// A comma-separated list, each resolved; duplicates are kept once.
pub fn resolve_list(list: &str) -> Result<Vec<u32>, Failure> {
    let mut numbers = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(
                Failure::new(format!("--syscalls '{list}' has an empty name"))
                    .hint("separate names with single commas, e.g. --syscalls read,write"),
            );
        }
        let nr = resolve(name)?;
        if !numbers.contains(&nr) {
            numbers.push(nr);
        }
    }
    Ok(numbers)
}

fn table_name(table: &Table, nr: u32) -> Option<&'static str> {
    entries(table)
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| *name)
}

fn resolve_in(table: Option<Table>, name: &str) -> Result<u32, Failure> {
    let bare = name.strip_prefix("sys_").unwrap_or(name);
    if let Ok(nr) = bare.strip_prefix("syscall_").unwrap_or(bare).parse::<u32>() {
        return Ok(nr);
    }
    let Some(table) = table else {
        return Err(Failure::new(format!(
            "syscall '{name}': meshbpf has no syscall table for {}",
            std::env::consts::ARCH
        ))
        .hint(
            "give syscall numbers instead of names (see the kernel's syscall table for this arch)",
        ));
    };
    if let Some((nr, _)) = entries(&table).find(|(_, n)| *n == bare) {
        return Ok(*nr);
    }
    let near = suggestions(&table, bare);
    let hint = if near.is_empty() {
        "give names as in `man 2 syscalls` (e.g. read, clock_nanosleep) or numbers".to_string()
    } else {
        format!("did you mean {}?", near.join(", "))
    };
    Err(Failure::new(format!(
        "'{name}' is not a syscall on {}",
        std::env::consts::ARCH
    ))
    .hint(hint))
}

/// Names that contain the misspelt one, or are one or two edits from it.
fn suggestions(table: &Table, name: &str) -> Vec<String> {
    const MAX: usize = 4;
    let mut near: Vec<(usize, &str)> = entries(table)
        .filter_map(|(_, candidate)| {
            let distance = edit_distance(name, candidate);
            (distance <= 2 || (name.len() >= 3 && candidate.contains(name)))
                .then_some((distance, *candidate))
        })
        .collect();
    near.sort();
    near.into_iter()
        .take(MAX)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: Table = [tables::X86_64, tables::UNIFIED];
    const ARM: Table = [tables::AARCH64, tables::UNIFIED];

    #[test]
    fn names_resolve_per_architecture() {
        let (x86, arm) = (Some(X86), Some(ARM));
        assert_eq!(resolve_in(x86, "read").unwrap(), 0);
        assert_eq!(resolve_in(arm, "read").unwrap(), 63);
        assert_eq!(resolve_in(x86, "getpid").unwrap(), 39);
        assert_eq!(resolve_in(arm, "getpid").unwrap(), 172);
        assert_eq!(resolve_in(x86, "clock_nanosleep").unwrap(), 230);
        assert_eq!(resolve_in(arm, "clock_nanosleep").unwrap(), 115);
        assert_eq!(resolve_in(x86, "sys_nanosleep").unwrap(), 35);
        assert_eq!(resolve_in(x86, "futex_waitv").unwrap(), 449);
        assert_eq!(resolve_in(arm, "mseal").unwrap(), 462);
        // aarch64 has no open(2), only openat(2).
        assert!(resolve_in(arm, "open").is_err());
        assert_eq!(table_name(&x86.unwrap(), 2), Some("open"));
        assert_eq!(table_name(&arm.unwrap(), 56), Some("openat"));
    }

    #[test]
    fn tables_have_one_name_per_number() {
        for arch in [X86, ARM] {
            let table: Vec<(u32, &str)> = arch.concat();
            for (i, (nr, name)) in table.iter().enumerate() {
                assert!(
                    table[i + 1..].iter().all(|(n, m)| n != nr && m != name),
                    "{nr} {name} twice"
                );
                assert!((*nr as usize) < 512, "{name} beyond the histogram slots");
            }
        }
    }

    #[test]
    fn numbers_pass_through_and_unknown_ones_print_as_numbers() {
        assert_eq!(resolve_in(None, "470").unwrap(), 470);
        assert_eq!(resolve_in(Some(X86), "syscall_470").unwrap(), 470);
        assert_eq!(table_name(&X86, 470), None);
        assert_eq!(display_name(511), "syscall_511");
    }

    #[test]
    fn an_unknown_name_says_so_and_suggests_near_ones() {
        let err = resolve_in(Some(X86), "clock_nanoslep").unwrap_err();
        let explained = crate::error::explain(&err.into());
        assert_eq!(
            explained.message,
            format!(
                "'clock_nanoslep' is not a syscall on {}",
                std::env::consts::ARCH
            )
        );
        assert_eq!(
            explained.hint.as_deref(),
            Some("did you mean clock_nanosleep?")
        );

        let err = resolve_in(Some(X86), "frobnicate").unwrap_err();
        let hint = crate::error::explain(&err.into()).hint.unwrap();
        assert!(
            hint.starts_with("give names as in `man 2 syscalls`"),
            "{hint}"
        );

        let err = resolve_in(None, "read").unwrap_err();
        assert!(err.to_string().contains("no syscall table"), "{err}");
    }

    #[test]
    fn lists_resolve_in_order_without_duplicates() {
        if TABLE.is_none() {
            return;
        }
        let read = resolve("read").unwrap();
        let write = resolve("write").unwrap();
        assert_eq!(resolve_list("read, write,read").unwrap(), vec![read, write]);
        let err = resolve_list("read,,write").unwrap_err();
        assert!(err.to_string().contains("empty name"), "{err}");
    }
}
