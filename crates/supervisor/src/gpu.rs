//! GPU utilisation and memory from NVML, which is loaded when vitals starts (`dlopen` of
//! `libnvidia-ml.so.1`): a machine without an NVIDIA driver loses only these metrics, and the
//! binary needs no GPU library to start.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use vitals_core::contract::metrics as names;

#[derive(Debug)]
pub(crate) struct Gpu {
    nvml: nvml_wrapper::Nvml,
}

impl Gpu {
    /// NVML, if this machine has it; why not, for the log.
    pub(crate) fn load() -> Result<Gpu, String> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| Gpu { nvml })
            .map_err(|e| e.to_string())
    }

    pub(crate) fn device_count(&self) -> u32 {
        self.nvml.device_count().unwrap_or(0)
    }

    pub(crate) fn encode(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        views: &[(String, crate::View)],
    ) -> Result<(), std::fmt::Error> {
        struct Sample {
            gpu: String,
            utilization: Option<f64>,
            used: Option<u64>,
            total: Option<u64>,
            processes: Vec<(u32, u64)>,
        }
        let samples: Vec<Sample> = (0..self.device_count())
            .filter_map(|i| {
                let device = self.nvml.device_by_index(i).ok()?;
                let memory = device.memory_info().ok();
                Some(Sample {
                    gpu: i.to_string(),
                    utilization: device
                        .utilization_rates()
                        .ok()
                        .map(|u| f64::from(u.gpu) / 100.0),
                    used: memory.as_ref().map(|m| m.used),
                    total: memory.as_ref().map(|m| m.total),
                    processes: device
                        .running_compute_processes()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| match p.used_gpu_memory {
                            nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some((p.pid, b)),
                            nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                        })
                        .collect(),
                })
            })
            .collect();
        let mut e = encoder.encode_descriptor(
            names::GPU_UTILIZATION,
            "Share of the last sample period in which the GPU was busy (NVML), 0 to 1",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            if let Some(u) = s.utilization {
                ConstGauge::new(u).encode(e.encode_family(&[("gpu", s.gpu.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::GPU_MEMORY_USED,
            "GPU memory in use, in bytes (NVML)",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            if let Some(u) = s.used {
                ConstGauge::new(u as f64).encode(e.encode_family(&[("gpu", s.gpu.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::GPU_MEMORY_TOTAL,
            "GPU memory, in bytes (NVML)",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            if let Some(t) = s.total {
                ConstGauge::new(t as f64).encode(e.encode_family(&[("gpu", s.gpu.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::PROCESS_GPU_MEMORY,
            "GPU memory a supervised process holds, in bytes (NVML), per GPU",
            None,
            MetricType::Gauge,
        )?;
        for (name, view) in views {
            let Some(pid) = view.pid.and_then(|p| u32::try_from(p).ok()) else {
                continue;
            };
            for s in &samples {
                let held: u64 = s
                    .processes
                    .iter()
                    .filter(|(p, _)| *p == pid)
                    .map(|(_, b)| b)
                    .sum();
                if s.processes.iter().any(|(p, _)| *p == pid) {
                    ConstGauge::new(held as f64).encode(
                        e.encode_family(&[("process", name.as_str()), ("gpu", s.gpu.as_str())])?,
                    )?;
                }
            }
        }
        Ok(())
    }
}
