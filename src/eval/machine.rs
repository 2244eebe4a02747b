//! The machine a timing ran on, recorded beside every timed result (as
//! llama-bench records its CPU), so runs on different hosts are compared by
//! their ratios and never by absolute time.

use candle_core::Device;
use serde::Serialize;

use crate::model::device_name;
use crate::model::packed::Isa;

/// Where a timed run ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu: String,
    /// Threads the forward pass runs on (the rayon pool).
    pub threads: usize,
    /// The instruction set the CPU kernels chose.
    pub kernels: &'static str,
    /// The device the model ran on (`cpu`, `cuda:0`, …).
    pub device: String,
}

impl Machine {
    /// This machine, running the model on `device`.
    pub fn this(device: &Device) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| cpu_model(&info))
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            threads: rayon::current_num_threads(),
            kernels: Isa::detect().name(),
            device: device_name(device),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} · {} threads · {} kernels · {}",
            self.cpu, self.threads, self.kernels, self.device
        )
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_read_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn this_machine_names_its_threads_kernels_and_device() {
        let m = Machine::this(&Device::Cpu);
        assert!(m.threads >= 1);
        assert!(["portable", "avx2", "avx512"].contains(&m.kernels));
        assert_eq!(m.device, "cpu");
        assert!(!m.cpu.is_empty());
    }
}
