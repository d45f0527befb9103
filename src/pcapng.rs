//! The few pcapng blocks `meshbpf capture` writes (draft-ietf-opsawg-pcapng):
//! a Section Header Block, one Interface Description Block (Ethernet, the
//! interface's name, nanosecond timestamps) and an Enhanced Packet Block per
//! packet with a comment. Written here rather than through a crate: the
//! format of these three blocks is small, and no pcapng crate was in the
//! build's registry (see README, "Capturing what the filter decided").
//! Blocks are in the host's byte order, which the byte-order magic declares.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 1;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
/// if_tsresol's value: 10^-9 s.
const NANOSECONDS: u8 = 9;

pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Starts the file: the section, and interface 0 named `if_name`.
    pub fn new(mut out: W, if_name: &str, snaplen: u32) -> io::Result<Writer<W>> {
        let mut shb = Vec::new();
        put32(&mut shb, BYTE_ORDER_MAGIC);
        shb.extend_from_slice(&1u16.to_ne_bytes());
        shb.extend_from_slice(&0u16.to_ne_bytes());
        // Section length unknown: the file is written as packets come.
        shb.extend_from_slice(&(-1i64).to_ne_bytes());
        end_options(&mut shb);
        write_block(&mut out, SECTION_HEADER, &shb)?;

        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        idb.extend_from_slice(&0u16.to_ne_bytes());
        put32(&mut idb, snaplen);
        option(&mut idb, IF_NAME, if_name.as_bytes());
        option(&mut idb, IF_TSRESOL, &[NANOSECONDS]);
        end_options(&mut idb);
        write_block(&mut out, INTERFACE_DESCRIPTION, &idb)?;
        Ok(Writer { out })
    }

    /// One packet of interface 0: its first bytes `data` of `original_len`.
    pub fn packet(
        &mut self,
        time: SystemTime,
        original_len: u32,
        data: &[u8],
        comment: &str,
    ) -> io::Result<()> {
        let ns = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut epb = Vec::with_capacity(32 + data.len() + comment.len());
        put32(&mut epb, 0);
        put32(&mut epb, (ns >> 32) as u32);
        put32(&mut epb, ns as u32);
        put32(&mut epb, data.len() as u32);
        put32(&mut epb, original_len);
        epb.extend_from_slice(data);
        pad(&mut epb);
        option(&mut epb, OPT_COMMENT, comment.as_bytes());
        end_options(&mut epb);
        write_block(&mut self.out, ENHANCED_PACKET, &epb)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn put32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_ne_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    buf.extend_from_slice(value);
    pad(buf);
}

fn end_options(buf: &mut Vec<u8>) {
    option(buf, OPT_END, &[]);
}

/// A block: type, total length, body (a multiple of 4 bytes), total length.
fn write_block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    let mut block = Vec::with_capacity(total as usize);
    put32(&mut block, kind);
    put32(&mut block, total);
    block.extend_from_slice(body);
    put32(&mut block, total);
    out.write_all(&block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_framed_by_their_lengths() {
        let mut file = Vec::new();
        let mut w = Writer::new(&mut file, "eth0", 1522).unwrap();
        w.packet(UNIX_EPOCH, 60, &[0xAB; 5], "rule x").unwrap();
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < file.len() {
            let word = |i: usize| u32::from_ne_bytes(file[i..i + 4].try_into().unwrap());
            let len = word(at + 4) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(word(at + len - 4) as usize, len);
            kinds.push(word(at));
            at += len;
        }
        assert_eq!(at, file.len());
        assert_eq!(
            kinds,
            [SECTION_HEADER, INTERFACE_DESCRIPTION, ENHANCED_PACKET]
        );
    }
}
