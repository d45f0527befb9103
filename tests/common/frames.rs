//! Test frame builder: headers are stacked in wire order and `build()` fills
//! in every field that depends on what follows them (ethertypes, next-header
//! numbers, IPv4 total length, IPv6 payload length, UDP length).
//!
//! Checksums stay zero: XDP programs see frames before any checksum check.
//!
//! ```ignore
//! let frame = Frame::eth().vlan(100).ipv4([10, 0, 0, 1], [10, 0, 0, 2]).udp(53, 53).payload(20);
//! let bytes = frame.build();
//! let udp_header = frame.span("udp");
//! let cut = frame.clone().truncate(udp_header.start + 4).build();
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const IPV4_MF: u16 = 0x2000;
const IPV4_DF: u16 = 0x4000;
const IPV4_OFFSET_MASK: u16 = 0x1FFF;

/// Locally administered, so they can never collide with a real NIC.
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A frame under construction; each method appends a header, or adjusts the
/// header appended last (and panics if that header has no such field).
#[derive(Clone, Debug)]
pub struct Frame {
    layers: Vec<Layer>,
    truncate: Option<usize>,
}

#[derive(Clone, Debug)]
enum Layer {
    Eth {
        next: Option<u16>,
    },
    Vlan {
        tpid: u16,
        vid: u16,
        next: Option<u16>,
    },
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        version: u8,
        ihl: Option<u8>,
        options: Vec<u8>,
        frag_off: u16,
        next: Option<u8>,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        version: u8,
        next: Option<u8>,
    },
    /// Hop-by-hop or destination options: same format, different number.
    Options {
        proto: u8,
        hdrlen: u8,
        next: Option<u8>,
    },
    Routing {
        hdrlen: u8,
        next: Option<u8>,
    },
    Fragment6 {
        frag_off: u16,
        next: Option<u8>,
    },
    Ah {
        icv_len: usize,
        next: Option<u8>,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        kind: u8,
        code: u8,
    },
    Icmpv6 {
        kind: u8,
        code: u8,
    },
    Arp {
        op: u16,
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
    },
    Payload(usize),
    Bytes(Vec<u8>),
}

impl Layer {
    fn name(&self) -> &'static str {
        match self {
            Layer::Eth { .. } => "eth",
            Layer::Vlan { .. } => "vlan",
            Layer::Ipv4 { .. } => "ipv4",
            Layer::Ipv6 { .. } => "ipv6",
            Layer::Options {
                proto: IPPROTO_HOPOPTS,
                ..
            } => "hop_by_hop",
            Layer::Options { .. } => "dest_opts",
            Layer::Routing { .. } => "routing",
            Layer::Fragment6 { .. } => "fragment",
            Layer::Ah { .. } => "ah",
            Layer::Tcp { .. } => "tcp",
            Layer::Udp { .. } => "udp",
            Layer::Icmp { .. } => "icmp",
            Layer::Icmpv6 { .. } => "icmpv6",
            Layer::Arp { .. } => "arp",
            Layer::Payload(_) | Layer::Bytes(_) => "payload",
        }
    }

    /// The ethertype an Ethernet header or VLAN tag must carry to announce
    /// this layer.
    fn ethertype(&self) -> Option<u16> {
        match self {
            Layer::Vlan { tpid, .. } => Some(*tpid),
            Layer::Ipv4 { .. } => Some(ETH_P_IP),
            Layer::Ipv6 { .. } => Some(ETH_P_IPV6),
            Layer::Arp { .. } => Some(ETH_P_ARP),
            _ => None,
        }
    }

    /// The protocol number an IP or extension header must carry to announce
    /// this layer.
    fn ip_proto(&self) -> Option<u8> {
        match self {
            Layer::Options { proto, .. } => Some(*proto),
            Layer::Routing { .. } => Some(IPPROTO_ROUTING),
            Layer::Fragment6 { .. } => Some(IPPROTO_FRAGMENT),
            Layer::Ah { .. } => Some(IPPROTO_AH),
            Layer::Tcp { .. } => Some(IPPROTO_TCP),
            Layer::Udp { .. } => Some(IPPROTO_UDP),
            Layer::Icmp { .. } => Some(IPPROTO_ICMP),
            Layer::Icmpv6 { .. } => Some(IPPROTO_ICMPV6),
            _ => None,
        }
    }

    /// Serializes this header given what follows it and how many bytes do.
    fn encode(&self, following: Option<&Layer>, rest: usize) -> Vec<u8> {
        let next_ethertype = |explicit: Option<u16>, what: &str| {
            explicit
                .or_else(|| following.and_then(Layer::ethertype))
                .unwrap_or_else(|| {
                    panic!("{what} is not followed by a known L3 header: set .ethertype()")
                })
        };
        // IPv6's "No Next Header" is the honest default for an IP header
        // followed by nothing, or by opaque payload.
        let next_proto = |explicit: Option<u8>| {
            explicit
                .or_else(|| following.and_then(Layer::ip_proto))
                .unwrap_or(IPPROTO_NONE)
        };
        let mut out = Vec::new();
        match self {
            Layer::Eth { next } => {
                out.extend_from_slice(&DST_MAC);
                out.extend_from_slice(&SRC_MAC);
                out.extend_from_slice(&next_ethertype(*next, "Ethernet header").to_be_bytes());
            }
            Layer::Vlan { vid, next, .. } => {
                out.extend_from_slice(&(vid & 0x0FFF).to_be_bytes());
                out.extend_from_slice(&next_ethertype(*next, "VLAN tag").to_be_bytes());
            }
            Layer::Ipv4 {
                src,
                dst,
                version,
                ihl,
                options,
                frag_off,
                next,
            } => {
                let hdr_len = 20 + options.len();
                let ihl = ihl.unwrap_or((hdr_len / 4) as u8);
                out.push(version << 4 | (ihl & 0x0F));
                out.push(0);
                out.extend_from_slice(&to_u16(hdr_len + rest, "IPv4 total length").to_be_bytes());
                out.extend_from_slice(&0x1234u16.to_be_bytes());
                out.extend_from_slice(&frag_off.to_be_bytes());
                out.push(64);
                out.push(next_proto(*next));
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(options);
            }
            Layer::Ipv6 {
                src,
                dst,
                version,
                next,
            } => {
                out.extend_from_slice(&[version << 4, 0, 0, 0]);
                out.extend_from_slice(&to_u16(rest, "IPv6 payload length").to_be_bytes());
                out.push(next_proto(*next));
                out.push(64);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
            }
            Layer::Options { hdrlen, next, .. } => {
                out.extend_from_slice(&[next_proto(*next), *hdrlen]);
                pad_options(&mut out, (*hdrlen as usize + 1) * 8 - 2);
            }
            Layer::Routing { hdrlen, next } => {
                // Experimental routing type (RFC 4727) with no segments left:
                // every node must skip it.
                out.extend_from_slice(&[next_proto(*next), *hdrlen, 253, 0]);
                out.resize((*hdrlen as usize + 1) * 8, 0);
            }
            Layer::Fragment6 { frag_off, next } => {
                out.extend_from_slice(&[next_proto(*next), 0]);
                out.extend_from_slice(&frag_off.to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            }
            Layer::Ah { icv_len, next } => {
                let len = 12 + icv_len;
                out.extend_from_slice(&[next_proto(*next), (len / 4 - 2) as u8, 0, 0]);
                out.extend_from_slice(&0x100u32.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes());
                out.resize(len, 0);
            }
            Layer::Tcp {
                sport,
                dport,
                flags,
            } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                // Data offset 5 words, the flags (SYN unless set), full
                // window, zero checksum and urgent pointer.
                out.extend_from_slice(&[5 << 4, *flags, 0xFF, 0xFF, 0, 0, 0, 0]);
            }
            Layer::Udp { sport, dport } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&to_u16(8 + rest, "UDP length").to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Layer::Icmp { kind, code } | Layer::Icmpv6 { kind, code } => {
                // Echo identifier and sequence number as the rest of header.
                out.extend_from_slice(&[*kind, *code, 0, 0, 0, 1, 0, 1]);
            }
            Layer::Arp { op, spa, tpa } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ETH_P_IP.to_be_bytes());
                out.extend_from_slice(&[6, 4]);
                out.extend_from_slice(&op.to_be_bytes());
                out.extend_from_slice(&SRC_MAC);
                out.extend_from_slice(&spa.octets());
                out.extend_from_slice(&[0; 6]);
                out.extend_from_slice(&tpa.octets());
            }
            Layer::Payload(len) => out.extend((0..*len).map(|i| i as u8)),
            Layer::Bytes(bytes) => out.extend_from_slice(bytes),
        }
        out
    }
}

fn to_u16(len: usize, field: &str) -> u16 {
    u16::try_from(len).unwrap_or_else(|_| panic!("{field} {len} does not fit 16 bits"))
}

/// Fills an options area with PadN options (Pad1 for a lone byte), so the
/// header stays well-formed for any length.
fn pad_options(out: &mut Vec<u8>, mut len: usize) {
    while len > 0 {
        if len == 1 {
            out.push(0);
            break;
        }
        let n = len.min(257);
        out.extend_from_slice(&[1, (n - 2) as u8]);
        out.resize(out.len() + n - 2, 0);
        len -= n;
    }
}

impl Frame {
    /// Starts a frame with an Ethernet II header; its ethertype follows the
    /// next header unless set with [`Frame::ethertype`].
    pub fn eth() -> Self {
        Frame {
            layers: vec![Layer::Eth { next: None }],
            truncate: None,
        }
    }

    fn push(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    fn last(&mut self) -> &mut Layer {
        self.layers
            .last_mut()
            .expect("a frame always starts with eth()")
    }

    fn misuse(&mut self, method: &str) -> ! {
        panic!(
            ".{method}() does not apply to a {} header",
            self.last().name()
        )
    }

    /// 802.1Q customer VLAN tag.
    pub fn vlan(self, vid: u16) -> Self {
        self.push(Layer::Vlan {
            tpid: ETH_P_8021Q,
            vid,
            next: None,
        })
    }

    /// 802.1ad service VLAN tag, the outer tag of QinQ.
    pub fn svlan(self, vid: u16) -> Self {
        self.push(Layer::Vlan {
            tpid: ETH_P_8021AD,
            vid,
            next: None,
        })
    }

    /// Ethertype announced by the last Ethernet header or VLAN tag, for
    /// frames whose next header the builder does not know.
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        match self.last() {
            Layer::Eth { next } | Layer::Vlan { next, .. } => *next = Some(ethertype),
            _ => self.misuse("ethertype"),
        }
        self
    }

    pub fn ipv4(self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        self.push(Layer::Ipv4 {
            src: src.into(),
            dst: dst.into(),
            version: 4,
            ihl: None,
            options: Vec::new(),
            frag_off: 0,
            next: None,
        })
    }

    pub fn ipv6(self, src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Self {
        self.push(Layer::Ipv6 {
            src: src.into(),
            dst: dst.into(),
            version: 6,
            next: None,
        })
    }

    /// Overrides the version nibble of the last IPv4 or IPv6 header.
    pub fn version(mut self, version: u8) -> Self {
        match self.last() {
            Layer::Ipv4 { version: v, .. } | Layer::Ipv6 { version: v, .. } => *v = version & 0x0F,
            _ => self.misuse("version"),
        }
        self
    }

    /// IPv4 options, padded with End of Options List to whole words; the IHL
    /// grows to match.
    pub fn options(mut self, options: &[u8]) -> Self {
        match self.last() {
            Layer::Ipv4 { options: o, .. } => {
                assert!(options.len() <= 40, "IPv4 options are at most 40 bytes");
                *o = options.to_vec();
                o.resize(options.len().div_ceil(4) * 4, 0);
            }
            _ => self.misuse("options"),
        }
        self
    }

    /// Writes this IHL regardless of the header bytes actually present.
    pub fn ihl(mut self, ihl: u8) -> Self {
        match self.last() {
            Layer::Ipv4 { ihl: i, .. } => *i = Some(ihl),
            _ => self.misuse("ihl"),
        }
        self
    }

    /// IPv4 fragment offset in 8-byte units and the More Fragments flag.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        match self.last() {
            Layer::Ipv4 { frag_off, .. } => {
                assert!(offset <= IPV4_OFFSET_MASK, "fragment offset is 13 bits");
                *frag_off = (*frag_off & IPV4_DF) | offset | if more { IPV4_MF } else { 0 };
            }
            _ => self.misuse("fragment"),
        }
        self
    }

    pub fn dont_fragment(mut self) -> Self {
        match self.last() {
            Layer::Ipv4 { frag_off, .. } => *frag_off |= IPV4_DF,
            _ => self.misuse("dont_fragment"),
        }
        self
    }

    /// Protocol number announced by the last IP or extension header, for
    /// headers the builder does not produce (or deliberately leaves out).
    pub fn protocol(mut self, proto: u8) -> Self {
        match self.last() {
            Layer::Ipv4 { next, .. }
            | Layer::Ipv6 { next, .. }
            | Layer::Options { next, .. }
            | Layer::Routing { next, .. }
            | Layer::Fragment6 { next, .. }
            | Layer::Ah { next, .. } => *next = Some(proto),
            _ => self.misuse("protocol"),
        }
        self
    }

    /// IPv6 hop-by-hop options header of `(hdrlen + 1) * 8` bytes.
    pub fn hop_by_hop(self, hdrlen: u8) -> Self {
        self.push(Layer::Options {
            proto: IPPROTO_HOPOPTS,
            hdrlen,
            next: None,
        })
    }

    /// IPv6 destination options header of `(hdrlen + 1) * 8` bytes.
    pub fn dest_opts(self, hdrlen: u8) -> Self {
        self.push(Layer::Options {
            proto: IPPROTO_DSTOPTS,
            hdrlen,
            next: None,
        })
    }

    /// IPv6 routing header of `(hdrlen + 1) * 8` bytes.
    pub fn routing(self, hdrlen: u8) -> Self {
        self.push(Layer::Routing { hdrlen, next: None })
    }

    /// IPv6 fragment header: offset in 8-byte units and More Fragments.
    pub fn ipv6_fragment(self, offset: u16, more: bool) -> Self {
        assert!(offset <= 0x1FFF, "fragment offset is 13 bits");
        self.push(Layer::Fragment6 {
            frag_off: offset << 3 | more as u16,
            next: None,
        })
    }

    /// Authentication header with an ICV of `icv_len` bytes; IPv6 needs
    /// `12 + icv_len` to be a multiple of 8, IPv4 a multiple of 4.
    pub fn ah(self, icv_len: usize) -> Self {
        assert!(
            icv_len % 4 == 0 && (12 + icv_len) / 4 - 2 <= 255,
            "AH length must be whole 32-bit words and fit its length field"
        );
        self.push(Layer::Ah {
            icv_len,
            next: None,
        })
    }

    pub fn tcp(self, sport: u16, dport: u16) -> Self {
        self.push(Layer::Tcp {
            sport,
            dport,
            flags: TCP_SYN,
        })
    }

    /// The flags byte of the last TCP header (CWR ECE URG ACK PSH RST SYN
    /// FIN); [`Frame::tcp`] sets SYN.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        match self.last() {
            Layer::Tcp { flags: f, .. } => *f = flags,
            _ => self.misuse("tcp_flags"),
        }
        self
    }

    pub fn udp(self, sport: u16, dport: u16) -> Self {
        self.push(Layer::Udp { sport, dport })
    }

    pub fn icmp(self, kind: u8, code: u8) -> Self {
        self.push(Layer::Icmp { kind, code })
    }

    pub fn icmpv6(self, kind: u8, code: u8) -> Self {
        self.push(Layer::Icmpv6 { kind, code })
    }

    /// Ethernet/IPv4 ARP request (28 bytes).
    pub fn arp_request(self, spa: impl Into<Ipv4Addr>, tpa: impl Into<Ipv4Addr>) -> Self {
        self.push(Layer::Arp {
            op: 1,
            spa: spa.into(),
            tpa: tpa.into(),
        })
    }

    /// `len` bytes of a counting pattern.
    pub fn payload(self, len: usize) -> Self {
        self.push(Layer::Payload(len))
    }

    /// These exact payload bytes.
    pub fn bytes(self, bytes: &[u8]) -> Self {
        self.push(Layer::Bytes(bytes.to_vec()))
    }

    /// Keeps only the first `len` bytes at build time, while every length
    /// field still describes the whole frame, as in a truncated capture.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    fn encode(&self) -> Vec<Vec<u8>> {
        let mut headers = vec![Vec::new(); self.layers.len()];
        let mut rest = 0;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            headers[i] = layer.encode(self.layers.get(i + 1), rest);
            rest += headers[i].len();
        }
        headers
    }

    pub fn build(&self) -> Vec<u8> {
        let mut bytes = self.encode().concat();
        if let Some(len) = self.truncate {
            bytes.truncate(len);
        }
        bytes
    }

    /// Byte range of the first header called `name` in the untruncated frame:
    /// "eth", "vlan", "ipv4", "ipv6", "hop_by_hop", "dest_opts", "routing",
    /// "fragment", "ah", "tcp", "udp", "icmp", "icmpv6", "arp" or "payload".
    pub fn span(&self, name: &str) -> Range<usize> {
        let mut start = 0;
        for (layer, header) in self.layers.iter().zip(self.encode()) {
            let end = start + header.len();
            if layer.name() == name {
                return start..end;
            }
            start = end;
        }
        panic!("the frame has no {name} header")
    }
}

/// A frame as hex, for failure messages that can be replayed.
pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}
