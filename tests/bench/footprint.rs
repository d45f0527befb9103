//! What a loaded program costs the kernel, as the kernel reports it: the
//! instructions its verifier processed, and the memory of every map it uses
//! (the `memlock` of each map's fdinfo), inner maps of map-in-maps included.

use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

pub struct Footprint {
    pub verified_insns: u32,
    /// Every map the program uses, and the inner maps they hold.
    pub map_bytes: u64,
    /// Of which the inner maps: what a rule set's own tables take.
    pub inner_bytes: u64,
}

pub fn of(prog: BorrowedFd<'_>) -> Footprint {
    let (verified_insns, map_ids) = prog_info(prog);
    let mut footprint = Footprint {
        verified_insns,
        map_bytes: 0,
        inner_bytes: 0,
    };
    for id in map_ids {
        let map = MapHandle::from_map_id(id).expect("opening one of the program's maps");
        footprint.map_bytes += memlock(map.as_fd());
        if matches!(map.map_type(), MapType::ArrayOfMaps | MapType::HashOfMaps) {
            for inner in inner_maps(&map) {
                let bytes = memlock(inner.as_fd());
                footprint.map_bytes += bytes;
                footprint.inner_bytes += bytes;
            }
        }
    }
    footprint
}

/// The verifier's processed-instruction count and the ids of the maps.
fn prog_info(prog: BorrowedFd<'_>) -> (u32, Vec<u32>) {
    let mut map_ids = vec![0u32; 64];
    // SAFETY: plain data; the kernel writes at most nr_map_ids ids.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { mem::zeroed() };
    info.nr_map_ids = map_ids.len() as u32;
    info.map_ids = map_ids.as_mut_ptr() as u64;
    let mut len = mem::size_of_val(&info) as u32;
    // SAFETY: info and map_ids outlive the call, len is info's size.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    assert_eq!(rc, 0, "reading the program's info");
    map_ids.truncate(info.nr_map_ids as usize);
    (info.verified_insns, map_ids)
}

/// A map-in-map's values, opened: in user space they are inner map ids.
fn inner_maps(outer: &MapHandle) -> Vec<MapHandle> {
    (0..outer.max_entries())
        .filter_map(|slot| {
            let value = outer
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .expect("reading a map-in-map slot")?;
            let id = u32::from_ne_bytes(value[..4].try_into().expect("an inner map id"));
            Some(MapHandle::from_map_id(id).expect("opening an inner map"))
        })
        .collect()
}

fn memlock(map: BorrowedFd<'_>) -> u64 {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", map.as_raw_fd()))
        .expect("reading a map's fdinfo");
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .expect("a map's fdinfo has memlock")
}
