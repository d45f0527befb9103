//! A minimal HTTP client for `meshbpf serve` and Prometheus's API: one
//! HTTP/1.0 request (so no chunked encoding) per connection.

use std::io::{Read, Write};
use std::net::TcpStream;

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GET `path` from 127.0.0.1:`port` in the caller's network namespace.
pub fn get(port: u16, path: &str, accept: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .expect("reading the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP header");
    Answer {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        content_type: head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap_or("")
            .to_string(),
        body: body.to_string(),
    }
}
