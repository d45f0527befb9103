//! The terminal stdout writes to, if it is one.

/// Rows of the terminal on stdout; None when stdout is no terminal.
pub fn rows() -> Option<u16> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize, which `size` is, and nothing else.
    let ret = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (ret == 0 && size.ws_row > 0).then_some(size.ws_row)
}
