//! Choosing the device a model runs on: `cpu`, `cuda` or `cuda:N`.

use candle_core::Device;

/// Opens the device named by `spec` (`cpu`, `cuda`, `cuda:N`).
pub fn open_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => open_cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => open_cuda(ordinal),
            _ => anyhow::bail!("unknown device `{other}`: use cpu, cuda or cuda:N"),
        },
    }
}

/// A short name for `device`, as `--device` spells it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> anyhow::Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        anyhow::anyhow!(
            "cannot open CUDA device {ordinal} ({e}): check the driver and that libcublas.so.13, \
             libcurand.so.10 and libnvrtc.so.13 are on LD_LIBRARY_PATH"
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!(
        "this attncache was built without CUDA: build it with `scripts/build-cuda.sh` \
         (cargo build --release --features cuda), or use --device cpu"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        assert_eq!(device_name(&open_device("cpu").unwrap()), "cpu");
        let err = open_device("gpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `gpu`"), "{err}");
        assert!(open_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let err = open_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("scripts/build-cuda.sh"), "{err}");
    }
}
