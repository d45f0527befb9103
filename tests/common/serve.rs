//! `meshbpf serve` started by a test: on a free loopback port, in a network
//! namespace or here, scraped over HTTP (promtool, the independent parser of
//! what it answers, is in promtool.rs).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{http, VethPair, BIN};

/// Runs `f` in network namespace `ns`, or here when None.
pub fn within<T: Send>(ns: Option<&str>, f: impl FnOnce() -> T + Send) -> T {
    match ns {
        Some(ns) => VethPair::in_netns(ns, f),
        None => f(),
    }
}

/// A loopback port nobody listens on now.
pub fn free_port(ns: Option<&str>) -> u16 {
    within(ns, || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// `meshbpf serve` on a free loopback port, in `ns` or here.
pub struct Server {
    pub child: Child,
    pub port: u16,
    ns: Option<String>,
}

impl Server {
    pub fn start(ns: Option<&str>, extra: &[&str]) -> Server {
        let port = free_port(ns);
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = match ns {
            // nsenter execs meshbpf: the child's pid is meshbpf's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["serve", "--listen", &listen])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshbpf serve");
        let server = Server {
            child,
            port,
            ns: ns.map(str::to_string),
        };
        super::wait_for(Duration::from_secs(10), || server.listening().then_some(()))
            .expect("meshbpf serve never listened");
        server
    }

    pub fn listening(&self) -> bool {
        within(self.ns.as_deref(), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        })
    }

    pub fn get(&self, path: &str, accept: Option<&str>) -> (u16, String, String) {
        let a = within(self.ns.as_deref(), || http::get(self.port, path, accept));
        (a.status, a.content_type, a.body)
    }

    /// /metrics in the text format, asserting a 200.
    pub fn scrape(&self) -> String {
        let (status, content_type, body) = self.get("/metrics", None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        body
    }

    /// Sends `signal`; the exit status and the stderr.
    pub fn stop(mut self, signal: Signal) -> (std::process::ExitStatus, String) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series, e.g. `meshbpf_attachments` or
/// `meshbpf_packets_total{interface="x",layer="l4",protocol="udp"}`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}
