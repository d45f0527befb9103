//! XDP programs written as raw instructions, so that no compiler adds to
//! them: the empty program (every table's floor) and programs that do one
//! map lookup, to time a lookup apart from everything a filter does around it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_sys::{
    bpf_insn, BPF_FUNC_map_lookup_elem, BPF_ADD, BPF_ALU64, BPF_CALL, BPF_DW, BPF_EXIT, BPF_IMM,
    BPF_JMP, BPF_K, BPF_LD, BPF_MEM, BPF_MOV, BPF_PSEUDO_MAP_FD, BPF_ST, BPF_W, BPF_X, XDP_PASS,
};

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
/// The read-only frame pointer.
const R10: u8 = 10;

/// `r0 = XDP_PASS; exit`: what any XDP program costs before it does anything.
pub fn empty_program() -> OwnedFd {
    load(c"bench_empty", &return_pass())
}

/// Looks `key` up in `map` once and passes the frame whatever it found. Its
/// cost over the empty program is one lookup plus the stores that put the
/// key on the stack (one per 4 bytes).
pub fn lookup_program(map: BorrowedFd<'_>, key: &[u8]) -> OwnedFd {
    assert!(
        key.len() % 4 == 0 && key.len() <= 64,
        "keys are stored as 32-bit words, on a small stack"
    );
    let base = -(key.len() as i16);
    let mut insns: Vec<bpf_insn> = key
        .chunks(4)
        .zip((base..0).step_by(4))
        .map(|(word, off)| {
            let word = u32::from_ne_bytes(word.try_into().expect("4 bytes"));
            insn(BPF_ST | BPF_MEM | BPF_W, R10, 0, off, word as i32)
        })
        .collect();
    // r1 = map (a two-slot 64-bit immediate); r2 = the key; call the helper.
    insns.push(insn(
        BPF_LD | BPF_DW | BPF_IMM,
        R1,
        BPF_PSEUDO_MAP_FD as u8,
        0,
        map.as_raw_fd(),
    ));
    insns.push(insn(0, 0, 0, 0, 0));
    insns.push(insn(BPF_ALU64 | BPF_MOV | BPF_X, R2, R10, 0, 0));
    insns.push(insn(BPF_ALU64 | BPF_ADD | BPF_K, R2, 0, 0, i32::from(base)));
    insns.push(insn(
        BPF_JMP | BPF_CALL,
        0,
        0,
        0,
        BPF_FUNC_map_lookup_elem as i32,
    ));
    insns.extend(return_pass());
    load(c"bench_lookup", &insns)
}

fn return_pass() -> [bpf_insn; 2] {
    [
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, XDP_PASS as i32),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
    let mut insn = bpf_insn {
        code: code as u8,
        off,
        imm,
        ..Default::default()
    };
    insn.set_dst_reg(dst);
    insn.set_src_reg(src);
    insn
}

fn load(name: &CStr, insns: &[bpf_insn]) -> OwnedFd {
    // SAFETY: the pointers outlive the call; NULL opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            name.as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    assert!(
        fd >= 0,
        "loading {name:?}: {}",
        io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: a fresh fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
