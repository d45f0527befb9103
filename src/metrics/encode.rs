//! Writes families with prometheus-client, as OpenMetrics or as the
//! Prometheus text format 0.0.4, and picks one from an Accept header.

use std::collections::HashSet;

use anyhow::{Context, Result};
use prometheus_client::encoding::{text, DescriptorEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::model::{Family, Kind, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// text/plain; version=0.0.4
    Text,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// As Prometheus's own clients negotiate: the type with the highest q
    /// wins; text unless OpenMetrics is preferred outright.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let quality = |wanted: &str| {
            accept
                .unwrap_or("")
                .split(',')
                .filter_map(|item| {
                    let mut parts = item.split(';').map(str::trim);
                    if parts.next()? != wanted {
                        return None;
                    }
                    let q = parts
                        .find_map(|p| p.strip_prefix("q="))
                        .map_or(Some(1.0), |q| q.parse::<f64>().ok())?;
                    Some(q)
                })
                .fold(0.0, f64::max)
        };
        let open = quality("application/openmetrics-text");
        if open > 0.0 && open > quality("text/plain") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The families of one scrape, handed to the registry for one encoding.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for family in &self.0 {
            let unit = family.unit.map(|u| Unit::Other(u.to_string()));
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, unit.as_ref(), kind)?;
            for (labels, value) in &family.samples {
                // No braces at all for a series without labels.
                if labels.is_empty() {
                    encode_value(&mut metric, family.kind, value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, family.kind, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    sample: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: Kind,
    value: &Value,
) -> std::fmt::Result {
    match (kind, value) {
        (Kind::Counter, Value::Int(v)) => sample.encode_counter::<(), _, u64>(v, None),
        (Kind::Counter, Value::Float(v)) => sample.encode_counter::<(), _, f64>(v, None),
        (Kind::Gauge, Value::Int(v)) => sample.encode_gauge(&(*v as i64)),
        (Kind::Gauge, Value::Float(v)) => sample.encode_gauge(v),
        (
            _,
            Value::Histogram {
                sum,
                count,
                buckets,
            },
        ) => sample.encode_histogram::<()>(*sum, *count, buckets, None),
        _ => Err(std::fmt::Error),
    }
}

pub fn encode(families: Vec<Family>, format: Format) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut text = String::new();
    text::encode(&mut text, &registry).context("encoding the metrics")?;
    Ok(match format {
        Format::OpenMetrics => text,
        Format::Text => to_text_004(&text),
    })
}

/// OpenMetrics to text 0.0.4: counters are named with their `_total` in
/// HELP and TYPE there, and neither `# UNIT` nor `# EOF` exists.
fn to_text_004(open_metrics: &str) -> String {
    let counters: HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Family> {
        let mut packets = Family::new("meshbpf_packets", Kind::Counter, "Packets");
        packets.add(vec![("interface", "veth0".into())], Value::Int(5));
        let mut latency =
            Family::new("meshbpf_syscall_latency", Kind::Histogram, "Latency").unit("seconds");
        latency.add(
            vec![("syscall", "read".into())],
            Value::Histogram {
                sum: 0.5,
                count: 3,
                buckets: vec![(2e-9, 1), (f64::MAX, 2)],
            },
        );
        vec![packets, latency]
    }

    #[test]
    fn openmetrics_names_counters_by_family_and_ends_with_eof() {
        let text = encode(sample(), Format::OpenMetrics).unwrap();
        assert!(text.contains("# TYPE meshbpf_packets counter\n"), "{text}");
        assert!(
            text.contains("meshbpf_packets_total{interface=\"veth0\"} 5\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn text_004_names_counters_with_total_and_drops_unit_and_eof() {
        let text = encode(sample(), Format::Text).unwrap();
        assert!(
            text.contains("# TYPE meshbpf_packets_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP meshbpf_packets_total Packets\n"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(
            text.contains(
                "meshbpf_syscall_latency_seconds_bucket{le=\"+Inf\",syscall=\"read\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("meshbpf_syscall_latency_seconds_count{syscall=\"read\"} 3\n"));
    }

    #[test]
    fn openmetrics_only_when_preferred() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain, application/openmetrics-text;q=0.9")),
            Format::Text
        );
    }
}
