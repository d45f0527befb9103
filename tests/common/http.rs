//! A minimal HTTP client for `meshbpf serve` and Prometheus's API: one
//! HTTP/1.0 request (so no chunked encoding) per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Answer {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub content_type: String,
    pub body: String,
}

/// GET `path` from 127.0.0.1:`port` in the caller's network namespace.
pub fn get(port: u16, path: &str, accept: Option<&str>) -> Answer {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n");
    exchange(port, request.as_bytes()).unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// Sends `raw` as it is to 127.0.0.1:`port` and reads the answer until the
/// server closes; None when it closed (or reset) without one.
pub fn exchange(port: u16, raw: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    // An answer is due at once; a server keeping the connection open past
    // it must not hang the test.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server that stops reading (a head too large) may answer anyway.
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let raw = String::from_utf8_lossy(&bytes);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some(Answer {
        status: head.split(' ').nth(1)?.parse().ok()?,
        head: head.to_string(),
        content_type: head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap_or("")
            .to_string(),
        body: body.to_string(),
    })
}
