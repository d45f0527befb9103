//! Packets of any IP protocol (GRE, SCTP, ...) through raw IP sockets: the
//! kernel writes the IP header, and needs no support for the protocol to
//! send one or to hand one to a listening raw socket (this kernel has
//! neither GRE nor SCTP).

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::VethPair;

pub const GRE: i32 = 47;
pub const SCTP: i32 = 132;

/// A GRE header carrying IPv4 (RFC 2784: no flags, version 0, protocol
/// type 0x0800), then the start of an IPv4 header.
pub const GRE_PACKET: [u8; 24] = [
    0x00, 0x00, 0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
];
/// An SCTP common header (ports 5000 -> 6000, a verification tag, no
/// checksum) and an empty DATA chunk header.
pub const SCTP_PACKET: [u8; 16] = [
    0x13, 0x88, 0x17, 0x70, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x03, 0x00, 0x04,
];

/// A nonblocking raw IPv4 socket for IP protocol `protocol`, in the calling
/// thread's namespace. One that listens also keeps the host from answering
/// the protocol's packets with ICMP protocol unreachable.
pub fn socket(protocol: i32) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol)))
        .unwrap_or_else(|e| panic!("raw socket for IP protocol {protocol}: {e}"));
    socket.set_nonblocking(true).unwrap();
    socket
}

/// Sends `count` packets of IP protocol `protocol` carrying `payload` from
/// namespace `ns` to IPv4 address `to`.
pub fn send(ns: &str, to: &str, protocol: i32, payload: &[u8], count: usize) {
    VethPair::in_netns(ns, || {
        let socket = socket(protocol);
        let to: SocketAddr = format!("{to}:0").parse().unwrap();
        for _ in 0..count {
            socket.send_to(payload, &to.into()).expect("sending raw IP");
        }
    });
}

/// The packets waiting on a nonblocking socket, read until none is left.
pub fn drain(socket: &Socket) -> usize {
    let mut buf = [MaybeUninit::new(0u8); 2048];
    std::iter::from_fn(|| socket.recv(&mut buf).ok()).count()
}
