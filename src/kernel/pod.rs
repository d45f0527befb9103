//! The skeletons' generated types as plain bytes (`plain`): map keys and
//! values are read into them and written from them.

/// Declares skeleton types plain data, so map bytes can be read into them.
///
/// Only for the `#[repr(C)]` structs libbpf-cargo generates from the
/// programs' BTF, and only those made of integers, integer newtypes (C
/// enums) and arrays of them: no bool, pointer or Rust enum field.
macro_rules! plain_data {
    ($($t:ty),+ $(,)?) => {
        $(
            // SAFETY: a generated #[repr(C)] struct of integers and arrays of
            // them (the invocation's promise), so any bytes are a valid
            // value; libbpf-cargo names every gap in the C layout as a
            // `__pad_*` byte array, so no byte of it is uninitialized.
            unsafe impl ::plain::Plain for $t {}
        )+
    };
}
pub(crate) use plain_data;

/// A plain value's bytes, as a map key or value.
pub fn bytes<T: plain::Plain>(value: &T) -> &[u8] {
    // SAFETY: every Plain type here is an integer, an array of them, or a
    // generated struct from `plain_data!`, whose padding is named fields:
    // every byte is initialized.
    unsafe { plain::as_bytes(value) }
}

/// All zeroes, for plain types without a `Default`.
pub fn zeroed<T: plain::Plain>() -> T {
    // SAFETY: any bytes are a valid value of a Plain type, zeroes included.
    unsafe { std::mem::zeroed() }
}
