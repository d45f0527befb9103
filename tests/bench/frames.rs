//! The frames fed to BPF_PROG_TEST_RUN, from the common case to the deepest
//! path through the parser, built with the test suite's frame builder.

use crate::common::frames::Frame as Builder;

pub const SRC4: [u8; 4] = [192, 0, 2, 2];
const DST4: [u8; 4] = [192, 0, 2, 1];
const SRC6: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 2];
const DST6: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1];

#[derive(Clone)]
pub struct Frame {
    /// Label with the frame's length, as it appears in the report.
    pub name: String,
    pub bytes: Vec<u8>,
    /// The counter slots xdp_counter must bump for this frame: the proof
    /// that the parser walked the intended path rather than bailing early.
    pub l3: &'static str,
    pub l4: &'static str,
}

impl Frame {
    fn new(label: &str, frame: Builder, l3: &'static str, l4: &'static str) -> Self {
        let bytes = frame.build();
        Frame {
            name: format!("{label} ({} B)", bytes.len()),
            bytes,
            l3,
            l4,
        }
    }
}

pub fn all() -> Vec<Frame> {
    vec![
        Frame::new(
            "IPv4 UDP",
            Builder::eth().ipv4(SRC4, DST4).udp(4000, 53).payload(22),
            "ipv4",
            "udp",
        ),
        Frame::new(
            "IPv6 TCP",
            Builder::eth().ipv6(SRC6, DST6).tcp(40000, 443),
            "ipv6",
            "tcp",
        ),
        // Both VLAN tags the parser accepts, then two IPv6 extension headers
        // to walk before TCP: the longest path short of a malformed frame.
        Frame::new(
            "QinQ IPv6, hop-by-hop + dest. options, TCP",
            Builder::eth()
                .svlan(100)
                .vlan(101)
                .ipv6(SRC6, DST6)
                .hop_by_hop(0)
                .dest_opts(0)
                .tcp(40000, 443),
            "ipv6",
            "tcp",
        ),
    ]
}

/// Pads every filter frame to 64 B, the smallest Ethernet frame, so that
/// copying the frame in costs every row alike.
const MIN_FRAME: usize = 64;

/// An IPv4 UDP frame from `src`, as the filters' address rules see it.
pub fn ipv4_udp_from(label: &str, src: [u8; 4]) -> Frame {
    let frame = Builder::eth().ipv4(src, DST4).udp(4000, 53);
    padded(label, frame, "udp")
}

/// An IPv4 TCP SYN (the builder's flags) to `dport`, as port rules and
/// SYN-flood protection see it.
pub fn ipv4_tcp_syn_to(label: &str, dport: u16) -> Frame {
    let frame = Builder::eth().ipv4(SRC4, DST4).tcp(40000, dport);
    padded(label, frame, "tcp")
}

fn padded(label: &str, frame: Builder, l4: &'static str) -> Frame {
    let len = frame.build().len();
    Frame::new(label, frame.payload(MIN_FRAME - len), "ipv4", l4)
}

/// An IPv4 UDP frame of `len` bytes in all, for costs that grow with the
/// bytes a program copies.
pub fn ipv4_udp_of_len(label: &str, len: usize) -> Frame {
    let frame = Builder::eth().ipv4(SRC4, DST4).udp(4000, 53);
    let headers = frame.build().len();
    Frame::new(label, frame.payload(len - headers), "ipv4", "udp")
}
