//! The HTTP/1.x server under `serve`, built to stay small whatever its
//! clients do. One thread polls the listener and every connection, so idle
//! connections cost a socket and a buffer each, never a thread; requests are
//! answered one at a time, as scrapes always were. Each connection carries
//! one request (`Connection: close`).
//!
//! The limits, and what a client past them gets:
//! - a request head over [`MAX_HEAD`] bytes: 431;
//! - a head not complete [`HEAD_TIMEOUT`] after the connection was accepted
//!   (an idle client, a slowloris): closed;
//! - more than [`MAX_CONNECTIONS`] open: the longest-waiting connection that
//!   has not sent a request yet is closed to make room, so idle clients
//!   cannot lock out a scrape; 503 when every one is being answered;
//! - an answer not taken within [`WRITE_TIMEOUT`]: closed.
//!
//! tiny_http, which this replaces, read heads without a limit and spent a
//! thread on every connection.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The largest request head read: a scrape's is a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// From accept to the end of the request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// From the answer's first byte to its last.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an answer, how long what the client still sends is read and
/// dropped: closing with unread input resets the connection, and the client
/// could lose the answer (a 431 to a client still sending its head).
const LINGER: Duration = Duration::from_secs(2);
/// How often the stop flag is looked at while nothing happens.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read per readiness, so that one connection cannot starve others.
const CHUNK: usize = 16 * 1024;

/// A request as the handler sees it: GET or HEAD (the server answers any
/// other method itself), the path without its query, the headers.
pub struct Request<'a> {
    pub path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl Request<'_> {
    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// The bytes on the wire; without the body for HEAD.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Serves `listener` until `stop` says so, answering each GET or HEAD
/// request with `answer`.
pub fn serve(
    listener: &TcpListener,
    stop: impl Fn() -> bool,
    mut answer: impl FnMut(&Request) -> Response,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut connections: Vec<Connection> = Vec::new();
    while !stop() {
        let now = Instant::now();
        let wait = connections
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .fold(POLL, Duration::min);
        let (incoming, ready) = match wait_ready(listener, &connections, wait) {
            Ok(ready) => ready,
            // A signal: the loop looks at the stop flag.
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        for (connection, ready) in connections.iter_mut().zip(ready) {
            if ready {
                connection.progress(&mut answer);
            }
        }
        let now = Instant::now();
        connections.retain(|c| !c.is_closed() && c.deadline > now);
        if incoming {
            accept_all(listener, &mut connections);
        }
    }
    Ok(())
}

/// Polls the listener and every connection for what each waits for: whether
/// a connection is waiting to be accepted, and which connections are ready.
fn wait_ready(
    listener: &TcpListener,
    connections: &[Connection],
    wait: Duration,
) -> Result<(bool, Vec<bool>), Errno> {
    let mut fds = Vec::with_capacity(connections.len() + 1);
    fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
    fds.extend(
        connections
            .iter()
            .map(|c| PollFd::new(c.stream.as_fd(), c.interest())),
    );
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    poll(&mut fds, timeout)?;
    let ready: Vec<bool> = fds
        .iter()
        .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        .collect();
    Ok((ready[0], ready[1..].to_vec()))
}

fn accept_all(listener: &TcpListener, connections: &mut Vec<Connection>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => admit(stream, connections),
            Err(err) if err.kind() == ErrorKind::WouldBlock => return,
            // Out of descriptors, or a connection reset before it was
            // accepted: the next round tries again.
            Err(err) => {
                log::warn!("accepting a connection: {err}");
                return;
            }
        }
    }
}

/// Takes a new connection in, closing the longest-waiting one without a
/// request when all the room is taken.
fn admit(stream: TcpStream, connections: &mut Vec<Connection>) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    if connections.len() >= MAX_CONNECTIONS {
        let idle = connections
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.phase, Phase::Head(_)))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(i, _)| i);
        match idle {
            Some(i) => {
                log::debug!("{MAX_CONNECTIONS} connections open: closing the longest idle one");
                connections.swap_remove(i);
            }
            None => {
                // Best effort: a full socket buffer drops the 503, the close
                // still tells the client.
                let busy = Response::text(503, "busy: every connection is being answered\n");
                let _ = (&stream).write(&busy.encode(false));
                return;
            }
        }
    }
    connections.push(Connection::new(stream));
}

struct Connection {
    stream: TcpStream,
    accepted: Instant,
    /// When the current phase must be over.
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    /// Reading the request head: what came so far.
    Head(Vec<u8>),
    /// Writing the answer: its bytes and how many went out.
    Answer(Vec<u8>, usize),
    /// Answered; reading and dropping what the client still sends.
    Linger,
    Closed,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            accepted: now,
            deadline: now + HEAD_TIMEOUT,
            phase: Phase::Head(Vec::new()),
        }
    }

    fn interest(&self) -> PollFlags {
        match self.phase {
            Phase::Answer(..) => PollFlags::POLLOUT,
            _ => PollFlags::POLLIN,
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    fn progress(&mut self, answer: &mut impl FnMut(&Request) -> Response) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Head(head) => self.read_head(head, answer),
            Phase::Answer(bytes, sent) => self.write(bytes, sent),
            Phase::Linger => self.linger(),
            Phase::Closed => Phase::Closed,
        };
    }

    fn read_head(
        &mut self,
        mut head: Vec<u8>,
        answer: &mut impl FnMut(&Request) -> Response,
    ) -> Phase {
        let before = head.len();
        // One byte past the limit tells a head that is too large.
        head.resize(before + (MAX_HEAD + 1 - before).min(CHUNK), 0);
        let read = match self.stream.read(&mut head[before..]) {
            Ok(0) => return Phase::Closed,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return Phase::Closed,
        };
        head.truncate(before + read);
        // Searched from a little before the new bytes: the blank line may
        // straddle two reads.
        let Some(end) = head_end(&head, before.saturating_sub(3)) else {
            if head.len() > MAX_HEAD {
                return self.respond(&too_large(), false);
            }
            return Phase::Head(head);
        };
        if end > MAX_HEAD {
            return self.respond(&too_large(), false);
        }
        match parse(&head[..end]) {
            Ok((method, request)) => {
                let response = match method {
                    "GET" | "HEAD" => answer(&request),
                    _ => Response::text(405, "only GET and HEAD\n"),
                };
                self.respond(&response, method == "HEAD")
            }
            Err(why) => self.respond(&Response::text(400, format!("bad request: {why}\n")), false),
        }
    }

    fn respond(&mut self, response: &Response, head_only: bool) -> Phase {
        self.deadline = Instant::now() + WRITE_TIMEOUT;
        self.write(response.encode(head_only), 0)
    }

    fn write(&mut self, bytes: Vec<u8>, mut sent: usize) -> Phase {
        while sent < bytes.len() {
            match self.stream.write(&bytes[sent..]) {
                Ok(0) => return Phase::Closed,
                Ok(n) => sent += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    return Phase::Answer(bytes, sent)
                }
                Err(_) => return Phase::Closed,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.deadline = Instant::now() + LINGER;
        Phase::Linger
    }

    fn linger(&mut self) -> Phase {
        let mut sink = [0; CHUNK];
        match self.stream.read(&mut sink) {
            Ok(0) => Phase::Closed,
            Ok(_) => Phase::Linger,
            Err(err) if err.kind() == ErrorKind::WouldBlock => Phase::Linger,
            Err(_) => Phase::Closed,
        }
    }
}

fn too_large() -> Response {
    Response::text(431, format!("request head larger than {MAX_HEAD} bytes\n"))
}

/// Where the head ends (after its blank line), searching from `from`; a bare
/// LF ends lines too.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The method and the request of a complete head.
fn parse(head: &[u8]) -> Result<(&str, Request<'_>), &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not UTF-8")?;
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD PATH HTTP/1.x");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err("the request line is not METHOD PATH HTTP/1.x");
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("a header line has no colon")?;
        headers.push((name.trim(), value.trim()));
    }
    Ok((method, Request { path, headers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line_with_crlf_or_lf() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert_eq!(head_end(head, 0), Some(head.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    }

    #[test]
    fn the_request_line_and_headers_are_parsed() {
        let (method, request) =
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nACCEPT:  text/plain \r\n\r\n").unwrap();
        assert_eq!(method, "GET");
        assert_eq!(request.path, "/metrics");
        assert_eq!(request.header("accept"), Some("text/plain"));
        assert_eq!(request.header("host"), None);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_answers_carry_the_length_but_no_body() {
        let response = Response::text(200, "abc");
        let head = String::from_utf8(response.encode(true)).unwrap();
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let full = String::from_utf8(response.encode(false)).unwrap();
        assert!(full.ends_with("\r\n\r\nabc"), "{full}");
        let refused = String::from_utf8(Response::text(405, "").encode(false)).unwrap();
        assert!(refused.contains("Allow: GET, HEAD\r\n"), "{refused}");
    }
}
