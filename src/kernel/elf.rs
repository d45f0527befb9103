//! Checks that a file is a BPF object this host can load before libbpf sees
//! it, so that each way of being wrong gets its own error instead of
//! libbpf's generic "failed to open object".

use crate::error::Failure;

const MAGIC: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
const ET_REL: u16 = 1;
const EM_BPF: u16 = 247;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SHT_NOBITS: u32 = 8;
const SHF_EXECINSTR: u64 = 4;
/// Functions in .text are subprograms; libbpf loads only named sections.
const SUBPROGRAM_SECTION: &str = ".text";
const COMPILE_HINT: &str =
    "compile the program with clang -target bpf -c (e.g. clang -g -O2 -target bpf -c prog.bpf.c -o prog.bpf.o)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    const HOST: Endian = if cfg!(target_endian = "little") {
        Endian::Little
    } else {
        Endian::Big
    };

    fn name(self) -> &'static str {
        match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        }
    }
}

/// Reads fixed-size fields of the file in its own byte order; callers check
/// bounds first.
struct Reader<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn field<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut raw = [0u8; N];
        raw.copy_from_slice(&self.bytes[offset..offset + N]);
        raw
    }

    fn u16(&self, offset: usize) -> u16 {
        let raw = self.field(offset);
        match self.endian {
            Endian::Little => u16::from_le_bytes(raw),
            Endian::Big => u16::from_be_bytes(raw),
        }
    }

    fn u32(&self, offset: usize) -> u32 {
        let raw = self.field(offset);
        match self.endian {
            Endian::Little => u32::from_le_bytes(raw),
            Endian::Big => u32::from_be_bytes(raw),
        }
    }

    fn u64(&self, offset: usize) -> u64 {
        let raw = self.field(offset);
        match self.endian {
            Endian::Little => u64::from_le_bytes(raw),
            Endian::Big => u64::from_be_bytes(raw),
        }
    }
}

struct Section {
    name_offset: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
}

/// Validates a BPF object: ELF, EM_BPF, 64-bit, the host's byte order,
/// relocatable, complete, and with at least one program section. The
/// message names what is wrong; the caller adds which file.
pub fn validate(bytes: &[u8]) -> Result<(), Failure> {
    if bytes.is_empty() {
        return Err(Failure::new("the file is empty").hint(COMPILE_HINT));
    }
    if !bytes.starts_with(MAGIC) {
        return Err(not_elf(bytes));
    }
    if bytes.len() < EHDR_SIZE {
        return Err(truncated(format!(
            "{} bytes, shorter than the {EHDR_SIZE}-byte ELF header",
            bytes.len()
        )));
    }
    let endian = match bytes[EI_DATA] {
        ELFDATA2LSB => Endian::Little,
        ELFDATA2MSB => Endian::Big,
        other => {
            return Err(Failure::new(format!(
                "not a valid ELF file: unknown byte order {other} in the ELF header"
            ))
            .hint(COMPILE_HINT))
        }
    };
    let elf = Reader { bytes, endian };
    let machine = elf.u16(18);
    if machine != EM_BPF {
        return Err(Failure::new(format!(
            "an ELF file for {}, not a BPF object (EM_BPF)",
            machine_name(machine)
        ))
        .hint(COMPILE_HINT));
    }
    if endian != Endian::HOST {
        return Err(Failure::new(format!(
            "a {} BPF object, but this host is {}",
            endian.name(),
            Endian::HOST.name()
        ))
        .hint(format!(
            "compile for this host's byte order: clang -target {} (or -target bpf, which follows the compiling host)",
            match Endian::HOST {
                Endian::Little => "bpfel",
                Endian::Big => "bpfeb",
            }
        )));
    }
    if bytes[EI_CLASS] != ELFCLASS64 {
        return Err(Failure::new("a 32-bit ELF file; BPF objects are 64-bit").hint(COMPILE_HINT));
    }
    let kind = elf.u16(16);
    if kind != ET_REL {
        return Err(Failure::new(format!(
            "an ELF file of type {}, not a relocatable object",
            type_name(kind)
        ))
        .hint("load the object file that clang -c writes, not a linked executable or library"));
    }
    let sections = sections(&elf)?;
    let names = string_table(&elf, &sections)?;
    let mut programs = 0;
    let mut subprogram_code = false;
    for section in &sections {
        let name = section_name(names, section.name_offset);
        if section.kind != SHT_NOBITS
            && section.offset.saturating_add(section.size) > bytes.len() as u64
        {
            return Err(truncated(format!(
                "section '{name}' ends at byte {}, past the end of the file ({} bytes)",
                section.offset.saturating_add(section.size),
                bytes.len()
            )));
        }
        if section.flags & SHF_EXECINSTR != 0 && section.size > 0 {
            if name == SUBPROGRAM_SECTION {
                subprogram_code = true;
            } else {
                programs += 1;
            }
        }
    }
    if programs == 0 {
        let why = if subprogram_code {
            "its only code is in .text, which libbpf treats as subprograms"
        } else {
            "it has no executable section"
        };
        return Err(Failure::new(format!("the object has no programs: {why}")).hint(
            "a program needs a section naming its hook, e.g. SEC(\"xdp\") or SEC(\"raw_tp/sys_enter\")",
        ));
    }
    Ok(())
}

fn not_elf(bytes: &[u8]) -> Failure {
    let head = &bytes[..bytes.len().min(64)];
    let looks = if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "it looks like text"
    } else {
        "it does not start with the ELF magic \\x7fELF"
    };
    Failure::new(format!("not an ELF file: {looks}")).hint(COMPILE_HINT)
}

fn truncated(what: String) -> Failure {
    Failure::new(format!("the file is truncated: {what}"))
        .hint("copy or compile the object again; it was cut short")
}

/// The section header table, bounds-checked against the file.
fn sections(elf: &Reader<'_>) -> Result<Vec<Section>, Failure> {
    let offset = elf.u64(40);
    let entry_size = elf.u16(58) as usize;
    let mut count = elf.u16(60) as u64;
    if offset == 0 {
        return Err(
            Failure::new("the object has no section headers, so no programs").hint(COMPILE_HINT),
        );
    }
    if entry_size != SHDR_SIZE {
        return Err(Failure::new(format!(
            "not a valid ELF file: section headers of {entry_size} bytes, expected {SHDR_SIZE}"
        ))
        .hint(COMPILE_HINT));
    }
    let len = elf.bytes.len() as u64;
    let end_of = |count: u64| offset.saturating_add(count.saturating_mul(SHDR_SIZE as u64));
    if end_of(count.max(1)) > len {
        return Err(truncated(format!(
            "the section header table ends at byte {}, past the end of the file ({len} bytes)",
            end_of(count.max(1))
        )));
    }
    // With 0xff00 sections or more, the count lives in section 0's size.
    if count == 0 {
        count = elf.u64(offset as usize + 32);
        if end_of(count) > len {
            return Err(truncated(format!(
                "the section header table ends at byte {}, past the end of the file ({len} bytes)",
                end_of(count)
            )));
        }
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = offset as usize + i * SHDR_SIZE;
            Section {
                name_offset: elf.u32(at),
                kind: elf.u32(at + 4),
                flags: elf.u64(at + 8),
                offset: elf.u64(at + 24),
                size: elf.u64(at + 32),
            }
        })
        .collect())
}

/// The section name string table's bytes.
fn string_table<'a>(elf: &Reader<'a>, sections: &[Section]) -> Result<&'a [u8], Failure> {
    let index = elf.u16(62) as usize;
    let table = sections.get(index).ok_or_else(|| {
        Failure::new(format!(
            "not a valid ELF file: the section name table is section {index} of {}",
            sections.len()
        ))
        .hint(COMPILE_HINT)
    })?;
    let end = table.offset.saturating_add(table.size);
    if end > elf.bytes.len() as u64 {
        return Err(truncated(format!(
            "the section name table ends at byte {end}, past the end of the file ({} bytes)",
            elf.bytes.len()
        )));
    }
    Ok(&elf.bytes[table.offset as usize..end as usize])
}

fn section_name(names: &[u8], offset: u32) -> String {
    let tail = names.get(offset as usize..).unwrap_or_default();
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

fn machine_name(machine: u16) -> String {
    let name = match machine {
        3 => "Intel 80386 (EM_386)",
        8 => "MIPS (EM_MIPS)",
        20 => "PowerPC (EM_PPC)",
        21 => "PowerPC64 (EM_PPC64)",
        22 => "S/390 (EM_S390)",
        40 => "ARM (EM_ARM)",
        62 => "x86-64 (EM_X86_64)",
        183 => "AArch64 (EM_AARCH64)",
        243 => "RISC-V (EM_RISCV)",
        258 => "LoongArch (EM_LOONGARCH)",
        _ => return format!("machine type {machine}"),
    };
    name.to_string()
}

fn type_name(kind: u16) -> String {
    match kind {
        0 => "ET_NONE".into(),
        2 => "ET_EXEC (an executable)".into(),
        3 => "ET_DYN (a shared library or PIE executable)".into(),
        4 => "ET_CORE (a core dump)".into(),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian BPF relocatable object: the null section,
    /// the name table and one code section called `code_name`.
    fn object(code_name: &str, code_flags: u64) -> Vec<u8> {
        let mut names = b"\0.shstrtab\0".to_vec();
        let code_name_offset = names.len() as u32;
        names.extend_from_slice(code_name.as_bytes());
        names.push(0);
        let code = [0x95u8, 0, 0, 0, 0, 0, 0, 0]; // exit
        let names_offset = EHDR_SIZE as u64;
        let code_offset = names_offset + names.len() as u64;
        let shoff = code_offset + code.len() as u64;

        let mut out = vec![0u8; EHDR_SIZE];
        out[..4].copy_from_slice(MAGIC);
        out[EI_CLASS] = ELFCLASS64;
        out[EI_DATA] = ELFDATA2LSB;
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_REL.to_le_bytes());
        out[18..20].copy_from_slice(&EM_BPF.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        out[58..60].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        out[62..64].copy_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&names);
        out.extend_from_slice(&code);
        let header = |name: u32, kind: u32, flags: u64, offset: u64, size: u64| {
            let mut h = vec![0u8; SHDR_SIZE];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h
        };
        out.extend(header(0, 0, 0, 0, 0));
        out.extend(header(1, 3, 0, names_offset, names.len() as u64));
        out.extend(header(
            code_name_offset,
            1,
            code_flags | 2,
            code_offset,
            code.len() as u64,
        ));
        out
    }

    fn message(bytes: &[u8]) -> String {
        validate(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_bpf_object_with_a_program_section_passes() {
        validate(&object("xdp", SHF_EXECINSTR)).unwrap();
    }

    #[test]
    fn each_defect_has_its_own_message() {
        assert_eq!(message(b""), "the file is empty");
        assert_eq!(
            message(b"hello world\n"),
            "not an ELF file: it looks like text"
        );
        assert_eq!(
            message(&[0u8, 1, 2, 3, 4]),
            "not an ELF file: it does not start with the ELF magic \\x7fELF"
        );
        assert_eq!(
            message(&object("xdp", SHF_EXECINSTR)[..40]),
            "the file is truncated: 40 bytes, shorter than the 64-byte ELF header"
        );

        let mut x86 = object("xdp", SHF_EXECINSTR);
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert_eq!(
            message(&x86),
            "an ELF file for x86-64 (EM_X86_64), not a BPF object (EM_BPF)"
        );

        let mut exec = object("xdp", SHF_EXECINSTR);
        exec[16..18].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            message(&exec),
            "an ELF file of type ET_EXEC (an executable), not a relocatable object"
        );

        let mut class32 = object("xdp", SHF_EXECINSTR);
        class32[EI_CLASS] = 1;
        assert_eq!(
            message(&class32),
            "a 32-bit ELF file; BPF objects are 64-bit"
        );
    }

    #[test]
    fn the_other_byte_order_is_refused() {
        let mut big = object("xdp", SHF_EXECINSTR);
        big[EI_DATA] = ELFDATA2MSB;
        big[18..20].copy_from_slice(&EM_BPF.to_be_bytes());
        assert_eq!(
            message(&big),
            "a big-endian BPF object, but this host is little-endian"
        );
    }

    #[test]
    fn truncation_anywhere_is_found() {
        let full = object("xdp", SHF_EXECINSTR);
        let cut = &full[..full.len() - 10];
        assert!(
            message(cut)
                .starts_with("the file is truncated: the section header table ends at byte"),
            "{}",
            message(cut)
        );
        // Section contents cut while the headers still claim them.
        let mut short = full.clone();
        let code_header = full.len() - SHDR_SIZE;
        short[code_header + 32..code_header + 40].copy_from_slice(&10_000u64.to_le_bytes());
        assert!(
            message(&short).starts_with("the file is truncated: section 'xdp' ends at byte"),
            "{}",
            message(&short)
        );
    }

    #[test]
    fn objects_without_programs_are_refused() {
        assert_eq!(
            message(&object(".text", SHF_EXECINSTR)),
            "the object has no programs: its only code is in .text, which libbpf treats as subprograms"
        );
        assert_eq!(
            message(&object(".data", 0)),
            "the object has no programs: it has no executable section"
        );
    }
}
