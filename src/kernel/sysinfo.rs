//! What the running kernel says about itself: release, sysctls, lockdown
//! mode and active LSMs.

use std::fs;
use std::io;

use crate::kernel::mounts;

/// `uname -r`.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// (major, minor) from a release such as "6.18.44-fc-v782".
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// A sysctl by its dotted name, e.g. `kernel.bpf_stats_enabled`.
pub fn sysctl(name: &str) -> io::Result<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).map(|v| v.trim().to_string())
}

/// The lockdown mode in force: `none`, `integrity` or `confidentiality`.
pub fn lockdown() -> io::Result<String> {
    mounts::read_securityfs("lockdown").map(|modes| selected_lockdown(&modes))
}

/// The file lists every mode and brackets the one in force.
fn selected_lockdown(modes: &str) -> String {
    modes
        .split_whitespace()
        .find_map(|m| m.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("none")
        .to_string()
}

/// The active LSMs, in the kernel's order.
pub fn lsms() -> io::Result<Vec<String>> {
    mounts::read_securityfs("lsm").map(|list| {
        list.trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_leading_numbers() {
        assert_eq!(version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(version("6.1"), Some((6, 1)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn the_bracketed_lockdown_mode_is_the_one_in_force() {
        assert_eq!(
            selected_lockdown("none [integrity] confidentiality\n"),
            "integrity"
        );
        assert_eq!(
            selected_lockdown("[none] integrity confidentiality"),
            "none"
        );
    }

    #[test]
    fn sysctls_are_read_by_their_dotted_names() {
        let value = sysctl("kernel.ostype").unwrap();
        assert_eq!(value, "Linux");
    }
}
