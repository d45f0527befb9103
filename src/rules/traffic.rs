//! The part of a rule that says which traffic it is about, shared by every
//! rule file: `src`, `dst`, `protocol`, `sport` and `dport`, parsed and
//! checked the same way for the filter and for QoS classes.
//!
//! Contradictions are refused with the reason: ports on a protocol other
//! than tcp and udp (a protocol given by number or keyword too), addresses
//! on arp, a src and a dst of different address families,
//! icmp (IPv4) with an IPv6 address and icmpv6 with an IPv4 one, which could
//! never match anything.

use serde_json::{Map, Value};

use super::{optional, port_range, prefix, protocol, PortRange, Prefix, Protocol, RuleError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    /// `any` when the rule does not say.
    pub protocol: Protocol,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
}

impl Traffic {
    /// Reads and checks the traffic fields of a rule object; other fields
    /// are the caller's.
    pub fn parse(map: &Map<String, Value>) -> Result<Traffic, RuleError> {
        let traffic = Traffic {
            src: optional(map, "src", prefix)?,
            dst: optional(map, "dst", prefix)?,
            protocol: optional(map, "protocol", protocol)?.unwrap_or(Protocol::Any),
            sport: optional(map, "sport", port_range)?,
            dport: optional(map, "dport", port_range)?,
        };
        traffic.check_ports()?;
        traffic.check_arp()?;
        traffic.check_families()?;
        Ok(traffic)
    }

    /// What a rule with none of the traffic fields matches.
    pub fn everything() -> Traffic {
        Traffic {
            src: None,
            dst: None,
            protocol: Protocol::Any,
            sport: None,
            dport: None,
        }
    }

    pub fn has_ports(&self) -> bool {
        self.sport.is_some() || self.dport.is_some()
    }

    pub fn addresses(&self) -> impl Iterator<Item = (&'static str, Prefix)> {
        [("src", self.src), ("dst", self.dst)]
            .into_iter()
            .filter_map(|(field, prefix)| Some((field, prefix?)))
    }

    fn ports(&self) -> impl Iterator<Item = &'static str> {
        [("sport", self.sport), ("dport", self.dport)]
            .into_iter()
            .filter_map(|(field, range)| range.map(|_| field))
    }

    fn check_ports(&self) -> Result<(), RuleError> {
        let Some(field) = self.ports().next() else {
            return Ok(());
        };
        let problem = match self.protocol {
            _ if self.protocol.has_ports() => return Ok(()),
            // SCTP and DCCP have ports, but no program reads them.
            Protocol::Number(_) => format!(
                "ports are matched on tcp and udp only, not on protocol {}",
                self.protocol
            ),
            _ => format!("protocol {} has no ports", self.protocol),
        };
        Err(RuleError::new(
            problem,
            format!("remove \"{field}\", or use protocol tcp, udp or any"),
        )
        .in_field(field))
    }

    fn check_arp(&self) -> Result<(), RuleError> {
        match self.addresses().next() {
            Some((field, _)) if self.protocol == Protocol::Arp => Err(RuleError::new(
                "protocol arp is not IP, so an arp rule cannot have an address",
                format!("remove \"{field}\"; an arp rule matches every ARP packet"),
            )
            .in_field(field)),
            _ => Ok(()),
        }
    }

    fn check_families(&self) -> Result<(), RuleError> {
        if let (Some(src), Some(dst)) = (self.src, self.dst) {
            if src.family != dst.family {
                return Err(RuleError::new(
                    format!(
                        "{dst} is {} but src {src} is {}; no packet has both",
                        dst.family, src.family
                    ),
                    "split the rule into one rule per address family",
                )
                .in_field("dst"));
            }
        }
        let Some(family) = self.protocol.family() else {
            return Ok(());
        };
        match self.addresses().find(|(_, prefix)| prefix.family != family) {
            Some((field, prefix)) => Err(RuleError::new(
                format!(
                    "protocol {} is {family} only, but {prefix} is {}",
                    self.protocol, prefix.family
                ),
                "ICMP over IPv4 is \"icmp\", ICMP over IPv6 is \"icmpv6\"",
            )
            .in_field(field)),
            None => Ok(()),
        }
    }
}
