//! Choosing the compute device from a step's `device` parameter.
//!
//! candle's `cuda_is_available()` only says whether CUDA was compiled in; `auto` also needs a
//! device that opens, so a CUDA build on a machine without a GPU (or driver) still picks the
//! CPU. Opened GPUs are kept for the process: every step of a run shares one CUDA context,
//! its loaded kernels and its cuBLAS handle.

use std::sync::{Mutex, OnceLock};

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
        "auto" if cuda_present() => "cuda".into(),
        "auto" if metal_present() => "metal".into(),
        "auto" => "cpu".into(),
        other => other.to_string(),
    }
}

/// Whether CUDA is compiled in and its first device opens (asked once per process).
pub fn cuda_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| cuda_is_available() && opened("cuda", 0).is_ok())
}

/// Whether Metal is compiled in and its first device opens (asked once per process).
pub fn metal_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| metal_is_available() && opened("metal", 0).is_ok())
}

/// GPU `ordinal` of `kind` (`cuda` or `metal`), opened once per process.
fn opened(kind: &'static str, ordinal: usize) -> candle_core::Result<Device> {
    static OPENED: Mutex<Vec<(&'static str, usize, Device)>> = Mutex::new(Vec::new());
    let mut all = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, device)) = all.iter().find(|(k, n, _)| *k == kind && *n == ordinal) {
        return Ok(device.clone());
    }
    let device = if kind == "metal" { Device::new_metal(ordinal)? } else { Device::new_cuda(ordinal)? };
    all.push((kind, ordinal, device.clone()));
    Ok(device)
}

/// The parameters with `device` resolved (see [`resolve`]), `precision: f32` dropped (it is
/// the default: keyed as absent, as results from before the parameter existed are) and hub
/// model ids in `model` pinned to a revision: [`crate::step::Step::resolve`] of the BERT steps.
pub fn resolve_params(params: &Params, env: &Environment) -> StepResult<Params> {
    let mut values = params.values().clone();
    if params.opt_str("precision")? == Some("f32") {
        values.remove("precision");
    }
    let mut out = Params::new(values);
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
        // The cause, without the backtrace candle attaches under RUST_BACKTRACE.
        let e = match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        };
        StepError::input_with_help(
            format!("device `{what}` is not available: {e}"),
            format!("build pipe with `--features {feature}` on a machine with the device, or use `device: cpu`"),
        )
    };
    match value {
        "cpu" => Ok(Device::Cpu),
        "auto" if cuda_present() => opened("cuda", 0).map_err(|e| unavailable("cuda", "cuda", e)),
        "auto" if metal_present() => opened("metal", 0).map_err(|e| unavailable("metal", "metal", e)),
        "auto" => Ok(Device::Cpu),
        "metal" => opened("metal", 0).map_err(|e| unavailable("metal", "metal", e)),
        "cuda" => opened("cuda", 0).map_err(|e| unavailable("cuda", "cuda", e)),
        other => {
            let n = other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).unwrap_or(0);
            opened("cuda", n).map_err(|e| unavailable(other, "cuda", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU, whether CUDA is compiled in or not (the CUDA build runs here
    /// against a driver stub): `auto` is keyed and opened as the CPU, and `cuda` fails with the
    /// cause on one line and a way out.
    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_cuda_fails_clearly() {
        if cuda_present() {
            return; // a GPU machine: scripts/gpu-check.sh covers it
        }
        assert_eq!(resolve("auto"), "cpu");
        assert!(open("auto").unwrap().is_cpu());
        let err = open("cuda").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("device `cuda` is not available: "), "{message}");
        assert!(!message.contains('\n'), "a backtrace in the message: {message}");
        assert!(err.help().is_some_and(|h| h.contains("--features cuda")), "{:?}", err.help());
        assert!(check("cuda:x").is_err() && check("cuda:1").is_ok());
    }
}
