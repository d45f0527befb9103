//! A map's entries by fd, straight into plain types: batched lookups and
//! the walk by next key. libbpf-rs' own batch lookup stops early on hash
//! maps, and its lookups copy every entry into a fresh vector.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;

use anyhow::{bail, Context, Result};

use crate::kernel::{ffi, pod};

/// A map whose entries are a `K` and a `V` each, as the kernel says: the
/// kernel never writes more into a `K` or a `V` than they hold.
pub struct Entries<'fd, K, V> {
    fd: BorrowedFd<'fd>,
    types: PhantomData<(K, V)>,
}

/// Where a batched walk stands.
pub struct Cursor {
    /// The kernel's opaque resume position: a bucket index for hash maps,
    /// a key for others.
    token: Vec<u8>,
    started: bool,
}

impl Cursor {
    /// Whether a batch has been read yet.
    pub fn started(&self) -> bool {
        self.started
    }
}

/// What one batched lookup read.
pub struct Batch {
    /// Entries written to the front of the buffers.
    pub count: usize,
    /// The walk is over (ENOENT): there is no next batch.
    pub last: bool,
}

impl<'fd, K: plain::Plain, V: ::plain::Plain> Entries<'fd, K, V> {
    /// The map behind `fd`; an error unless its keys are `K`-sized and its
    /// values `V`-sized (per-CPU maps have one value per CPU: never).
    pub fn of(fd: BorrowedFd<'fd>) -> Result<Self> {
        let info = libbpf_rs::MapInfo::new(fd).context("reading map info")?;
        let (key, value) = (info.info.key_size as usize, info.info.value_size as usize);
        if info.map_type().is_percpu() || key != mem::size_of::<K>() || value != mem::size_of::<V>()
        {
            bail!(
                "map entries are {key}/{value} bytes{}, not {}/{}",
                if info.map_type().is_percpu() {
                    " per CPU"
                } else {
                    ""
                },
                mem::size_of::<K>(),
                mem::size_of::<V>()
            );
        }
        Ok(Entries {
            fd,
            types: PhantomData,
        })
    }

    /// A batched walk from the first entry.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            token: vec![0u8; mem::size_of::<K>().max(8)],
            started: false,
        }
    }

    /// The next batch from where `cursor` stands (BPF_MAP_LOOKUP_BATCH),
    /// written to the front of `keys` and `values`. The kernel's errno comes
    /// back as is: ENOSPC when one hash bucket holds more than the buffers.
    pub fn lookup_batch(
        &self,
        cursor: &mut Cursor,
        keys: &mut [K],
        values: &mut [V],
    ) -> io::Result<Batch> {
        let room = keys.len().min(values.len());
        let mut count = u32::try_from(room).unwrap_or(u32::MAX);
        let token = cursor.token.as_mut_ptr().cast();
        let in_batch = if cursor.started {
            token
        } else {
            ptr::null_mut()
        };
        let opts = ffi::opts::<libbpf_sys::bpf_map_batch_opts>();
        // SAFETY: keys and values hold at least `count` entries of the map's
        // key and value sizes (checked in `of`), and the token has room for
        // a key or a bucket index; the kernel writes at most `count` entries
        // and one token.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                self.fd.as_raw_fd(),
                in_batch,
                token,
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let last = match ffi::check(ret) {
            Ok(_) => false,
            // The walk is over; this last batch may still hold some.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        cursor.started = true;
        Ok(Batch {
            count: (count as usize).min(room),
            last,
        })
    }

    /// Every entry, a batch of `batch` at a time until the walk ends. A
    /// hash bucket larger than the buffers (ENOSPC) doubles them.
    pub fn read_all(&self, mut batch: usize) -> io::Result<Vec<(K, V)>> {
        let mut all = Vec::new();
        let mut keys: Vec<K> = (0..batch).map(|_| pod::zeroed()).collect();
        let mut values: Vec<V> = (0..batch).map(|_| pod::zeroed()).collect();
        let mut cursor = self.cursor();
        loop {
            match self.lookup_batch(&mut cursor, &mut keys, &mut values) {
                Ok(read) => {
                    all.extend(keys.drain(..read.count).zip(values.drain(..read.count)));
                    if read.last {
                        return Ok(all);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && batch < 1 << 24 => batch *= 2,
                Err(e) => return Err(e),
            }
            keys.resize_with(batch, pod::zeroed);
            values.resize_with(batch, pod::zeroed);
        }
    }

    /// The key after `prev`, or the first one (BPF_MAP_GET_NEXT_KEY); None
    /// past the last. When `prev` is gone, the kernel starts over.
    pub fn next_key(&self, prev: Option<&K>) -> io::Result<Option<K>> {
        let prev: *const libc::c_void = prev.map_or(ptr::null(), |k| ptr::from_ref(k).cast());
        let mut next: K = pod::zeroed();
        // SAFETY: prev is null or a key, next a key (sizes checked in `of`).
        let ret = unsafe {
            libbpf_sys::bpf_map_get_next_key(
                self.fd.as_raw_fd(),
                prev,
                ptr::from_mut(&mut next).cast(),
            )
        };
        match ffi::check(ret) {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The value of `key`; None when the map has no such key.
    pub fn lookup(&self, key: &K) -> io::Result<Option<V>> {
        let mut value: V = pod::zeroed();
        // SAFETY: key is a key and value a value (sizes checked in `of`).
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                ptr::from_ref(key).cast(),
                ptr::from_mut(&mut value).cast(),
            )
        };
        match ffi::check(ret) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A new array map of `entries` values of `value_size` bytes, to become an
/// inner map of a map-in-map whose template has BPF_F_INNER_MAP: with that
/// flag its size may differ from the template's.
pub fn create_inner_array(
    name: &str,
    value_size: usize,
    entries: usize,
) -> Result<libbpf_rs::MapHandle> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        map_flags: libbpf_sys::BPF_F_INNER_MAP,
        ..Default::default()
    };
    libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::Array,
        Some(name),
        mem::size_of::<u32>() as u32,
        value_size as u32,
        entries.max(1) as u32,
        &opts,
    )
    .with_context(|| format!("creating map {name} ({entries} entries of {value_size} bytes)"))
}

/// Returns once every non-sleepable BPF program that was running when it
/// was called has finished: the kernel calls synchronize_rcu() after a
/// syscall updates a map-in-map, so this updates a throwaway one. What a
/// running program may still read (a policy generation just replaced) is
/// safe to clear after it.
pub fn wait_for_running_programs() -> Result<()> {
    let inner = create_inner_array("rcu_barrier_in", mem::size_of::<u32>(), 1)?;
    let inner_fd = inner.as_fd().as_raw_fd() as u32;
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        inner_map_fd: inner_fd,
        ..Default::default()
    };
    let outer = libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::ArrayOfMaps,
        Some("rcu_barrier"),
        mem::size_of::<u32>() as u32,
        mem::size_of::<u32>() as u32,
        1,
        &opts,
    )
    .context("creating a map-in-map to wait for running programs")?;
    libbpf_rs::MapCore::update(
        &outer,
        &0u32.to_ne_bytes(),
        &inner_fd.to_ne_bytes(),
        libbpf_rs::MapFlags::ANY,
    )
    .context("waiting for running programs")
}

/// Batch updates of at most this many value bytes, so the kernel's copy of
/// one batch stays small.
const BATCH_BYTES: usize = 8 << 20;

/// Writes `keys` and `values`, packed back to back, with BPF_MAP_UPDATE_BATCH
/// (BPF_ANY), one call per [`BATCH_BYTES`] of values instead of one syscall
/// per entry. A per-CPU map's value is one slot of the value size rounded up
/// to 8 bytes per possible CPU, as the kernel copies it (libbpf-rs' own
/// batch update refuses that stride).
pub fn update_batch(map: &dyn libbpf_rs::MapCore, keys: &[u8], values: &[u8]) -> Result<()> {
    let name = map.name().to_string_lossy();
    let key_size = map.key_size() as usize;
    let stride = match map.map_type().is_percpu() {
        true => (map.value_size() as usize).next_multiple_of(8) * libbpf_rs::num_possible_cpus()?,
        false => map.value_size() as usize,
    };
    let count = keys.len() / key_size.max(1);
    if keys.len() != count * key_size || values.len() != count * stride {
        bail!(
            "writing {name}: {} key bytes and {} value bytes are not {count} entries of {key_size} and {stride}",
            keys.len(),
            values.len()
        );
    }
    let per_batch = (BATCH_BYTES / stride.max(1)).max(1);
    let opts = libbpf_sys::bpf_map_batch_opts {
        elem_flags: libbpf_sys::BPF_ANY as u64,
        ..ffi::opts()
    };
    for (k, v) in keys
        .chunks(per_batch * key_size)
        .zip(values.chunks(per_batch * stride))
    {
        let mut written = (k.len() / key_size) as u32;
        // SAFETY: k holds `written` keys and v as many values of the map's
        // sizes (checked above); the kernel only reads them and writes the
        // count back.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_batch(
                map.as_fd().as_raw_fd(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                &mut written,
                &opts,
            )
        };
        ffi::check(ret).with_context(|| format!("writing {name} ({count} entries)"))?;
    }
    Ok(())
}
