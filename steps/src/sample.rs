//! The `sample` step kind: the header and the first (or a seeded random choice of) N rows of a
//! table. It makes small pipelines from big files (`nsmc-tiny.yaml`).
//!
//! A table read with quoting off (TSV, as NSMC) is sampled line by line: the output is the
//! header line and the chosen lines, byte for byte. Any other table (CSV with RFC 4180 quoting,
//! where a row may span lines, JSON Lines, Parquet) is read with [`crate::text::table`] and the
//! chosen rows are written in the input's own format (uncompressed), so the output's
//! [`InputSource`] keeps the input's file name and downstream kinds read it as they would the
//! input: texts come through byte for byte (a CSV is re-quoted where a field needs it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use polars::prelude::{CsvWriter, DataFrame, IdxCa, JsonFormat, JsonWriter, ParquetWriter, PlSmallStr, SerWriter};

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::error::{StepError, StepResult};
use crate::step::{
    Default, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::text::table::{
    gunzip, resolve_formats, validate_params, Format, Quoting, Reading, Table, FORMAT_PARAM, QUOTING_PARAM,
};

pub struct Sample;

static SPEC: StepSpec = StepSpec {
    kind: "sample",
    all_cores: false,
    version: 1,
    summary: "keep the header and N rows of a table (first N, or a seeded random choice), in the table's format",
    params: &[
        ParamSpec::required("rows", ParamType::Uint, "how many rows to keep"),
        ParamSpec::optional(
            "seed",
            ParamType::Uint,
            Default::Absent,
            "pick rows at random with this seed (keeps file order)",
        ),
        ParamSpec::optional(
            "header",
            ParamType::Bool,
            Default::Bool(true),
            "the first line is a header and is always kept",
        ),
        ParamSpec::optional("log_every", ParamType::Uint, Default::Int(0), "log every N rows kept (0: never)")
            .not_in_key(),
        FORMAT_PARAM,
        QUOTING_PARAM,
        // No default: sample had no `separator` before formats, and its key has none for TSV.
        ParamSpec::optional(
            "separator",
            ParamType::Str,
            Default::Absent,
            "field separator of a tsv table: \"\\t\" (default) or \",\"",
        ),
    ],
    inputs: &[InputSpec::required("data", "the table to sample")],
    outputs: &[OutputSpec { name: "file", help: "the sampled table" }],
    reported: &[],
};

impl Step for Sample {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        validate_params(params)?;
        match params.usize("rows")? {
            0 => Err(StepError::param("rows", "must be at least 1")),
            _ => Ok(()),
        }
    }

    fn resolve_inputs(&self, params: &Params, sources: &BTreeMap<String, InputSource>) -> StepResult<Params> {
        resolve_formats(params, &["data"], sources)
    }

    fn output_source(
        &self,
        _output: &str,
        _params: &Params,
        sources: &BTreeMap<String, InputSource>,
    ) -> Option<InputSource> {
        let data = sources.get("data")?;
        // The output is written uncompressed, in the input's format.
        let file_name = data.file_name.as_ref().map(|n| n.strip_suffix(".gz").unwrap_or(n).to_string());
        Some(InputSource { display: format!("a sample of {}", data.display), file_name })
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let source = ctx.source("data");
        let reading = Reading::of(ctx.params, "data", &source)?;
        if reading.quoting == Quoting::None && matches!(reading.format, Format::Csv | Format::Tsv) {
            sample_lines(ctx, &source)
        } else {
            sample_rows(ctx, &source, reading)
        }
    }
}

/// The rows to keep of `total`: the first `wanted`, or a seeded choice in file order.
fn pick(total: usize, wanted: usize, seed: Option<usize>) -> Vec<usize> {
    match seed {
        Some(seed) if wanted < total => {
            let mut rng = StdRng::seed_from_u64(seed as u64);
            let mut idx = sample(&mut rng, total, wanted).into_vec();
            idx.sort_unstable();
            idx
        }
        _ => (0..wanted.min(total)).collect(),
    }
}

/// A table read with quoting off: the header line and the chosen lines, byte for byte.
fn sample_lines(ctx: &StepContext<'_>, source: &InputSource) -> StepResult<()> {
    let path = ctx.input("data")?;
    let raw = fs::read(path).map_err(StepError::io("reading", path))?;
    let text = String::from_utf8(gunzip(raw, &source.display)?).map_err(|e| {
        StepError::input(format!("{}: not UTF-8 text (byte {})", source.display, e.utf8_error().valid_up_to()))
    })?;
    let mut lines: Vec<&str> = text.lines().collect();
    let header = if ctx.params.bool("header")? && !lines.is_empty() { Some(lines.remove(0)) } else { None };
    let picked = pick(lines.len(), ctx.params.usize("rows")?, ctx.params.opt_usize("seed")?);
    let out_path = ctx.output("file");
    let mut out = fs::File::create(&out_path).map_err(StepError::io("creating", &out_path))?;
    let log_every = ctx.params.opt_usize("log_every")?.unwrap_or(0);
    let mut write = |line: &str| writeln!(out, "{line}").map_err(StepError::io("writing", &out_path));
    if let Some(h) = header {
        write(h)?;
    }
    for (n, &i) in picked.iter().enumerate() {
        write(lines[i])?;
        if log_every > 0 && (n + 1) % log_every == 0 {
            ctx.events.log(&format!("{} rows", n + 1));
        }
    }
    ctx.events.log(&format!("kept {} of {} rows", picked.len(), lines.len()));
    Ok(())
}

/// A table read with polars (quoted CSV, JSON Lines, Parquet): the chosen rows, written in the
/// input's format.
fn sample_rows(ctx: &StepContext<'_>, source: &InputSource, reading: Reading) -> StepResult<()> {
    if !ctx.params.bool("header")? {
        return Err(StepError::param(
            "header",
            format!(
                "is false, but {} is read as {} with quoting, which has a header: only tables read line by line \
                 (quoting off) may lack one",
                source.display,
                reading.format.name()
            ),
        ));
    }
    let table = Table::open(ctx.input("data")?, source, reading)?;
    let picked = pick(table.len(), ctx.params.usize("rows")?, ctx.params.opt_usize("seed")?);
    let idx: Vec<u32> = picked.iter().map(|&i| i as u32).collect();
    let mut rows = table
        .frame()
        .take(&IdxCa::from_vec(PlSmallStr::from("row"), idx))
        .map_err(|e| StepError::failed(format!("sampling {}: {e}", source.display)))?;
    let out_path = ctx.output("file");
    write_table(&mut rows, reading, &out_path)?;
    ctx.events.log(&format!("kept {} of {} rows", picked.len(), table.len()));
    Ok(())
}

/// Writes `df` to `path` in `reading`'s format.
fn write_table(df: &mut DataFrame, reading: Reading, path: &Path) -> StepResult<()> {
    let file = fs::File::create(path).map_err(StepError::io("creating", path))?;
    let mut out = BufWriter::new(file);
    let written = match reading.format {
        Format::Csv | Format::Tsv => {
            CsvWriter::new(&mut out).include_header(true).with_separator(reading.separator).finish(df)
        }
        Format::Jsonl => JsonWriter::new(&mut out).with_json_format(JsonFormat::JsonLines).finish(df),
        Format::Parquet => ParquetWriter::new(&mut out).finish(df).map(|_| ()),
    };
    written.map_err(|e| StepError::failed(format!("writing {}: {e}", path.display())))?;
    out.flush().map_err(StepError::io("writing", path))
}
