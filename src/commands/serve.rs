//! `meshbpf serve [--listen ADDR:PORT]`: /metrics (Prometheus text 0.0.4 or
//! OpenMetrics, by the Accept header) and /healthz over HTTP, one request at
//! a time, until SIGTERM or Ctrl-C (exit 0). Every scrape reads the pins
//! then and there. The server's limits (head size, connections, timeouts)
//! are in metrics::http.

use std::net::TcpListener;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::ServeArgs;
use crate::error::Failure;
use crate::health::{Check, Overall};
use crate::interrupt;
use crate::kernel::caps;
use crate::kernel::pins::StateRoot;
use crate::metrics::http::{self, Request, Response};
use crate::metrics::{self, Format};

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
    let listener = TcpListener::bind(args.listen).map_err(|err| {
        Failure::new(format!("cannot listen on {}: {err}", args.listen))
            .hint("pick a free port with --listen ADDR:PORT (`ss -ltnp` shows who holds this one)")
    })?;
    log::info!("serving /metrics and /healthz on http://{}", args.listen);
    http::serve(&listener, interrupt::happened, |request| {
        answer(root, request)
    })
    .with_context(|| format!("serving HTTP on {}", args.listen))
}

fn answer(root: &StateRoot, request: &Request) -> Response {
    match request.path {
        "/metrics" => metrics_response(root, Format::negotiate(request.header("Accept"))),
        "/healthz" => health_response(root),
        _ => Response::text(404, "not found: try /metrics or /healthz\n"),
    }
}

fn metrics_response(root: &StateRoot, format: Format) -> Response {
    match metrics::exposition(root, format) {
        Ok(text) => Response {
            status: 200,
            content_type: format.content_type(),
            body: text.into_bytes(),
        },
        Err(err) => {
            log::warn!("scrape failed: {err:#}");
            Response::text(500, format!("reading meshbpf's state: {err:#}\n"))
        }
    }
}

fn health_response(root: &StateRoot) -> Response {
    let checks = metrics::health_checks(root);
    let status = Overall::of(&checks, true);
    let body = serde_json::to_string(&Health { status, checks }).unwrap_or_default();
    Response {
        status: if status == Overall::Fail { 503 } else { 200 },
        content_type: "application/json",
        body: (body + "\n").into_bytes(),
    }
}
