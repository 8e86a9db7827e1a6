//! `vitals_process_*` (DESIGN.md's second wave), read at scrape time from the supervisor's view
//! and from `/proc`, and the GPUs' utilisation and memory where NVML is present.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use vitals_core::contract::metrics as names;

use crate::machine::Reason;
use crate::Managed;

#[derive(Debug)]
pub(crate) struct ProcessCollector {
    pub processes: Vec<Arc<Managed>>,
    #[cfg(feature = "gpu")]
    pub gpu: Option<Arc<crate::gpu::Gpu>>,
}

/// What `/proc/PID/stat` says of one process: CPU seconds and resident bytes.
fn proc_usage(pid: i32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) and 24 (rss, pages), counted from 1 with pid and comm.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let page = rustix::param::page_size() as u64;
    Some(((utime + stime) as f64 / ticks as f64, rss_pages * page))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let views: Vec<(String, crate::View)> = self
            .processes
            .iter()
            .map(|p| (p.spec.name.clone(), p.view()))
            .collect();
        let usage: Vec<Option<(f64, u64)>> = views
            .iter()
            .map(|(_, v)| v.pid.and_then(proc_usage))
            .collect();

        let mut e = encoder.encode_descriptor(
            names::PROCESS_UP,
            "1 while the supervised process runs and passes its health check",
            None,
            MetricType::Gauge,
        )?;
        for (name, view) in &views {
            ConstGauge::new(i64::from(view.ready))
                .encode(e.encode_family(&[("process", name.as_str())])?)?;
        }

        let mut e = encoder.encode_descriptor(
            names::counter_base(names::PROCESS_RESTARTS_TOTAL),
            "Restarts of a supervised process, by why",
            None,
            MetricType::Counter,
        )?;
        for (name, view) in &views {
            for (label, count) in Reason::LABELS.iter().zip(view.restarts_by_reason) {
                ConstCounter::new(count)
                    .encode(e.encode_family(&[("process", name.as_str()), ("reason", label)])?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            names::PROCESS_START_TIME,
            "When the supervised process last started, in seconds since the epoch",
            None,
            MetricType::Gauge,
        )?;
        for (name, view) in &views {
            if let Some(t) = view.started_at {
                ConstGauge::new(t).encode(e.encode_family(&[("process", name.as_str())])?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            names::PROCESS_RESIDENT_MEMORY,
            "Resident memory of the supervised process, in bytes",
            None,
            MetricType::Gauge,
        )?;
        for ((name, _), usage) in views.iter().zip(&usage) {
            if let Some((_, rss)) = usage {
                ConstGauge::new(*rss as f64)
                    .encode(e.encode_family(&[("process", name.as_str())])?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            names::counter_base(names::PROCESS_CPU_SECONDS_TOTAL),
            "CPU time of the supervised process (user and system) since it last started, in seconds",
            None,
            MetricType::Counter,
        )?;
        for ((name, _), usage) in views.iter().zip(&usage) {
            if let Some((cpu, _)) = usage {
                ConstCounter::new(*cpu).encode(e.encode_family(&[("process", name.as_str())])?)?;
            }
        }

        #[cfg(feature = "gpu")]
        if let Some(gpu) = &self.gpu {
            gpu.encode(&mut encoder, &views)?;
        }
        Ok(())
    }
}
