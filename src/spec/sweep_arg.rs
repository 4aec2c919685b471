//! `--sweep STEP.PARAM=A,B,C`: one parameter tried at several values in one run. Several
//! `--sweep`s make a grid; each point of it is a variant with its own overrides.

use super::OverrideArg;

/// One parsed `--sweep` argument: the same target with each value as an override.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepArg {
    pub values: Vec<OverrideArg>,
}

impl std::str::FromStr for SweepArg {
    type Err = String;

    /// Values are separated by commas and parsed as YAML scalars like `--set` values.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (target, raw) =
            text.split_once('=').ok_or_else(|| format!("`{text}` is not STEP.PARAM=A,B,... (missing `=`)"))?;
        let values = raw
            .split(',')
            .map(|v| format!("{target}={}", v.trim()).parse::<OverrideArg>())
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() < 2 {
            return Err(format!(
                "`{text}`: a sweep needs at least two values separated by commas (one value: use --set)"
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].iter().any(|w| w.value == v.value) {
                return Err(format!("`{text}`: value `{}` is given twice", v.text.split_once('=').map_or("", |x| x.1)));
            }
        }
        Ok(SweepArg { values })
    }
}

/// Every combination of one value per sweep (the first sweep varies slowest), each as its list
/// of overrides. No sweeps: one empty variant.
pub fn variants(sweeps: &[SweepArg]) -> Vec<Vec<OverrideArg>> {
    let mut out: Vec<Vec<OverrideArg>> = vec![Vec::new()];
    for sweep in sweeps {
        out =
            out.iter().flat_map(|v| sweep.values.iter().map(move |o| [v.clone(), vec![o.clone()]].concat())).collect();
    }
    out
}

/// `lr=1e-5` or `lr=1e-5,epochs=3`: how a variant is named in step names and reports.
pub fn label(overrides: &[OverrideArg]) -> String {
    overrides
        .iter()
        .map(|o| {
            let value = o.text.split_once('=').map_or("", |x| x.1);
            format!("{}={value}", o.param)
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_make_a_grid() {
        let lr: SweepArg = "finetune.lr=1e-5, 3e-5,5e-5".parse().unwrap();
        assert_eq!(lr.values.len(), 3);
        assert_eq!(lr.values[1].value.as_f64(), Some(3e-5));
        let epochs: SweepArg = "finetune.epochs=2,3".parse().unwrap();
        let grid = variants(&[lr, epochs]);
        assert_eq!(grid.len(), 6);
        assert_eq!(label(&grid[0]), "lr=1e-5,epochs=2");
        assert_eq!(label(&grid[5]), "lr=5e-5,epochs=3");
        assert_eq!(variants(&[]), vec![Vec::<OverrideArg>::new()]);
        assert!("finetune.lr=1e-5".parse::<SweepArg>().unwrap_err().contains("at least two"));
        assert!("finetune.lr=1,1".parse::<SweepArg>().unwrap_err().contains("twice"));
        assert!("lr=1,2".parse::<SweepArg>().is_err());
    }
}
