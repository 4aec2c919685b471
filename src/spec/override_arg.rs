//! `--set STEP.PARAM=VALUE`: a parameter override for one run.

use serde_yaml::Value;

/// One parsed `--set` argument. `params.NAME=VALUE` overrides a shared value.
#[derive(Debug, Clone, PartialEq)]
pub struct OverrideArg {
    pub step: String,
    pub param: String,
    pub value: Value,
    /// The argument as typed, for messages.
    pub text: String,
}

impl std::str::FromStr for OverrideArg {
    type Err = String;

    /// Values are parsed as YAML scalars, so `3e-5`, `true` and `64` get their types.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (target, raw) =
            text.split_once('=').ok_or_else(|| format!("`{text}` is not STEP.PARAM=VALUE (missing `=`)"))?;
        let (step, param) = target
            .split_once('.')
            .filter(|(s, p)| !s.is_empty() && !p.is_empty())
            .ok_or_else(|| format!("`{text}` is not STEP.PARAM=VALUE (missing `.` between step and parameter)"))?;
        let value =
            serde_yaml::from_str::<Value>(raw).map_err(|e| format!("`{text}`: value is not valid YAML: {e}"))?;
        let value = match value {
            Value::Null if raw.trim().is_empty() => Value::String(String::new()),
            v => v,
        };
        Ok(OverrideArg { step: step.to_string(), param: param.to_string(), value, text: text.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_get_yaml_types() {
        let o: OverrideArg = "finetune.lr=3e-5".parse().unwrap();
        assert_eq!((o.step.as_str(), o.param.as_str()), ("finetune", "lr"));
        assert_eq!(o.value.as_f64(), Some(3e-5));
        let o: OverrideArg = "encode.max_len=64".parse().unwrap();
        assert_eq!(o.value.as_u64(), Some(64));
        let o: OverrideArg = "split.stratify=true".parse().unwrap();
        assert_eq!(o.value.as_bool(), Some(true));
        assert!("nodot=1".parse::<OverrideArg>().is_err());
        assert!("a.b".parse::<OverrideArg>().is_err());
    }
}
