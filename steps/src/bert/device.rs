//! Choosing the compute device from a step's `device` parameter.

use candle_core::utils::{cuda_is_available, metal_is_available};
use candle_core::Device;

use crate::error::{StepError, StepResult};
use crate::step::{Environment, Params};

/// Checks a `device` value without opening the device: `cpu`, `auto`, `cuda`, `cuda:N`, `metal`.
pub fn check(value: &str) -> StepResult<()> {
    let ok = match value {
        "cpu" | "auto" | "cuda" | "metal" => true,
        other => other.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok()),
    };
    if ok {
        Ok(())
    } else {
        Err(StepError::param("device", format!("`{value}` is not a device (cpu, auto, cuda, cuda:N, metal)")))
    }
}

/// What `value` names on this machine, for the key: `auto` becomes `cuda`, `metal` or `cpu`
/// (as compiled in and present), so a CPU result and a GPU result never share a key. Other
/// values are already explicit.
pub fn resolve(value: &str) -> String {
    match value {
        "auto" if cuda_is_available() => "cuda".into(),
        "auto" if metal_is_available() => "metal".into(),
        "auto" => "cpu".into(),
        other => other.to_string(),
    }
}

/// The parameters with `device` resolved (see [`resolve`]) and hub model ids in `model`
/// pinned to a revision: [`crate::step::Step::resolve`] of the BERT steps.
pub fn resolve_params(params: &Params, env: &Environment) -> StepResult<Params> {
    let mut out = params.clone();
    if let Some(value) = params.opt_str("device")? {
        out.set("device", resolve(value).into());
    }
    if params.get("model").is_some() {
        crate::hub::pin_param(&mut out, "model", env)?;
    }
    Ok(out)
}

/// Opens the device. `auto` picks CUDA, then Metal, then the CPU, as compiled in.
pub fn open(value: &str) -> StepResult<Device> {
    check(value)?;
    let unavailable = |what: &str, feature: &str, e: candle_core::Error| {
        StepError::input_with_help(
            format!("device `{what}` is not available: {e}"),
            format!("build pipe with `--features {feature}` on a machine with the device, or use `device: cpu`"),
        )
    };
    match value {
        "cpu" => Ok(Device::Cpu),
        "auto" if cuda_is_available() => Device::new_cuda(0).map_err(|e| unavailable("cuda", "cuda", e)),
        "auto" if metal_is_available() => Device::new_metal(0).map_err(|e| unavailable("metal", "metal", e)),
        "auto" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).map_err(|e| unavailable("metal", "metal", e)),
        "cuda" => Device::new_cuda(0).map_err(|e| unavailable("cuda", "cuda", e)),
        other => {
            let n = other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).unwrap_or(0);
            Device::new_cuda(n).map_err(|e| unavailable(other, "cuda", e))
        }
    }
}
