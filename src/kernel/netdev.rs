//! Network interfaces, as seen from the network namespace meshbpf runs in.

use anyhow::Result;
use nix::net::if_::{if_nameindex, if_nametoindex};

use crate::error::Failure;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

pub fn validate_name(name: &str) -> Result<(), Failure> {
    let bad = name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(Failure::new(format!("'{name}' is not a valid interface name"))
            .hint("interface names are 1 to 15 characters without '/', ':' or spaces; list them with `ip link`"));
    }
    Ok(())
}

pub fn resolve(name: &str) -> Result<Interface> {
    validate_name(name)?;
    match if_nametoindex(name) {
        Ok(index) => Ok(Interface {
            name: name.to_string(),
            index,
        }),
        Err(_) => {
            let known = names().join(", ");
            Err(Failure::new(format!("interface '{name}' does not exist in this network namespace"))
                .hint(format!("interfaces here: {known}; in another namespace, run meshbpf there (nsenter --net=/run/netns/NAME meshbpf ...)"))
                .into())
        }
    }
}

/// The name an ifindex has now, if it still exists here.
pub fn name_of(index: u32) -> Option<String> {
    if_nameindex()
        .ok()?
        .iter()
        .find(|i| i.index() == index)
        .map(|i| i.name().to_string_lossy().into_owned())
}

fn names() -> Vec<String> {
    if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_validated() {
        for good in ["eth0", "veth-a.100", "a", "abcdefghijklmno"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", "eth0:1", ".", ".."] {
            let err = validate_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a valid interface name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn loopback_resolves_and_unknown_names_do_not() {
        assert_eq!(resolve("lo").unwrap().index, 1);
        let err = resolve("nosuchif0").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("interface 'nosuchif0' does not exist"),
            "{msg}"
        );
    }
}
