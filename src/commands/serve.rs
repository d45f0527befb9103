//! `meshbpf serve [--listen ADDR:PORT] [--max-series N]`: /metrics
//! (Prometheus text 0.0.4 or OpenMetrics, by the Accept header) and /healthz
//! over HTTP, one request at a time, until SIGTERM or Ctrl-C (exit 0). Every
//! scrape reads the pins then and there; only which rules have series of
//! their own and the hook probes' results are kept between scrapes. The
//! server's limits (head size, connections, timeouts) are in metrics::http.

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
use crate::metrics::{self, Exporter, Format};

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
    let mut exporter = Exporter::new(args.max_series);
    http::serve(&listener, interrupt::happened, |request| {
        answer(root, &mut exporter, request)
    })
    .with_context(|| format!("serving HTTP on {}", args.listen))
}

fn answer(root: &StateRoot, exporter: &mut Exporter, request: &Request) -> Response {
    match request.path {
        "/metrics" => {
            let format = Format::negotiate(request.header("Accept"));
            metrics_response(exporter.scrape(root, format), format)
        }
        "/healthz" => health_response(root),
        _ => Response::text(404, "not found: try /metrics or /healthz\n"),
    }
}

fn metrics_response(scraped: Result<String>, format: Format) -> Response {
    match scraped {
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
