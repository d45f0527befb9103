//! `meshbpf serve [--listen ADDR:PORT]`: /metrics (Prometheus text 0.0.4 or
//! OpenMetrics, by the Accept header) and /healthz over HTTP, one request at
//! a time, until SIGTERM or Ctrl-C (exit 0). Every scrape reads the pins
//! then and there.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::cli::ServeArgs;
use crate::error::Failure;
use crate::health::{Check, Overall};
use crate::interrupt;
use crate::kernel::caps;
use crate::kernel::pins::StateRoot;
use crate::metrics::{self, Format};

/// How long a wait for a request lasts before the stop flag is looked at.
const POLL: Duration = Duration::from_millis(100);

/// /healthz's body: `health -j` without the hook probes, which load
/// programs and are too heavy for a probe that runs every few seconds.
#[derive(Serialize)]
struct Health {
    status: Overall,
    checks: Vec<Check>,
}

pub fn run(root: &StateRoot, args: &ServeArgs) -> Result<()> {
    caps::require("serve", &[caps::BPF, caps::SYS_ADMIN])?;
    interrupt::install_with_sigterm()?;
    let server = Server::http(args.listen).map_err(|err| {
        Failure::new(format!("cannot listen on {}: {err}", args.listen))
            .hint("pick a free port with --listen ADDR:PORT (`ss -ltnp` shows who holds this one)")
    })?;
    log::info!("serving /metrics and /healthz on http://{}", args.listen);
    while !interrupt::happened() {
        if let Some(request) = server.recv_timeout(POLL)? {
            answer(root, request);
        }
    }
    Ok(())
}

fn answer(root: &StateRoot, request: Request) {
    let response = match (request.method(), request.url()) {
        (Method::Get, "/metrics") => {
            let accept = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Accept"))
                .map(|h| h.value.as_str());
            metrics_response(root, Format::negotiate(accept))
        }
        (Method::Get, "/healthz") => health_response(root),
        (Method::Get, _) => {
            Response::from_string("not found: try /metrics or /healthz\n").with_status_code(404)
        }
        _ => Response::from_string("only GET\n").with_status_code(405),
    };
    if let Err(err) = request.respond(response) {
        log::warn!("answering a request: {err}");
    }
}

fn metrics_response(root: &StateRoot, format: Format) -> Response<std::io::Cursor<Vec<u8>>> {
    match metrics::exposition(root, format) {
        Ok(text) => Response::from_string(text).with_header(content_type(format.content_type())),
        Err(err) => {
            log::warn!("scrape failed: {err:#}");
            Response::from_string(format!("reading meshbpf's state: {err:#}\n"))
                .with_status_code(500)
        }
    }
}

fn health_response(root: &StateRoot) -> Response<std::io::Cursor<Vec<u8>>> {
    let checks = metrics::health_checks(root);
    let status = Overall::of(&checks, true);
    let code = if status == Overall::Fail { 503 } else { 200 };
    let body = serde_json::to_string(&Health { status, checks }).unwrap_or_default();
    Response::from_string(body + "\n")
        .with_status_code(code)
        .with_header(content_type("application/json"))
}

fn content_type(value: &str) -> Header {
    Header::from_bytes("Content-Type", value).expect("a valid header")
}
