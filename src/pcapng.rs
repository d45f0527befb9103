//! The pcapng file `meshbpf capture` writes, through the pcap-file crate: a
//! Section Header Block in the host's byte order, one Interface
//! Description Block (Ethernet, the interface's name, nanosecond
//! timestamps: pcap-file writes an Enhanced Packet Block's time in
//! nanoseconds whatever the interface says, so if_tsresol must be 9) and an
//! Enhanced Packet Block with a comment per packet.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, PcapError};

/// if_tsresol's value: 10^-9 s.
const NANOSECONDS: u8 = 9;

pub struct Writer<W: Write> {
    out: PcapNgWriter<W>,
}

impl<W: Write> Writer<W> {
    /// Starts the file: the section, and interface 0 named `if_name`.
    pub fn new(out: W, if_name: &str, snaplen: u32) -> io::Result<Writer<W>> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            ..Default::default()
        };
        let mut out = PcapNgWriter::with_section_header(out, section).map_err(io_error)?;
        out.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(if_name)),
                InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
            ],
        })
        .map_err(io_error)?;
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
        self.out
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
                original_len,
                data: Cow::Borrowed(data),
                options: vec![EnhancedPacketOption::Comment(Cow::Borrowed(comment))],
            })
            .map(drop)
            .map_err(io_error)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.get_mut().flush()
    }
}

/// A write error as the I/O error it is, so that a closed pipe stays
/// recognisable; pcap-file's own errors (a field it cannot encode) as
/// invalid data.
fn io_error(err: PcapError) -> io::Error {
    match err {
        PcapError::IoError(err) => err,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}
