//! TensorBoard event files for the training steps of a run (`pipe run --tensorboard DIR`):
//! `DIR/<run>/<step>/events.out.tfevents.<seconds>.<host>.pipe`, so `tensorboard --logdir DIR`
//! shows each run's steps as its runs: `epoch/<field>` per epoch (step = the epoch:
//! `train_loss`, `train_accuracy`, `valid_accuracy`, `lr`, ...; pretrain's `mlm_loss`, ...) and
//! `batch/<field>` per logged batch interval (step = the update: `loss`, `accuracy`, `lr`).
//! Written from the steps' `metrics` outputs after the run, so the steps stay free of it and a
//! cached step is shown too; wall times are reconstructed from the epochs' durations.
//!
//! The format: TFRecord framing (length as u64 LE, its masked CRC-32C, the data, the data's
//! masked CRC-32C) around `Event` protocol buffers: wall_time (1, double), step (2, int64),
//! file_version (3, "brain.Event:2", the first record) or summary (5) → repeated Value (1) →
//! tag (1, string), simple_value (2, float). Those few fields are encoded here by hand: a
//! protobuf crate (prost and its derive macros) would cost more build time than the 40 lines.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{RunResults, Series, TrackingError};
use crate::run_record::RunRecord;

/// The CRC TFRecord uses: CRC-32C (Castagnoli).
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Writes one event file per training step of `run` under `dir`; returns the files.
pub fn write(dir: &Path, run: &RunRecord, results: &RunResults) -> Result<Vec<PathBuf>, TrackingError> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    let run_dir = dir.join(run_folder(run));
    let host = run.host.clone().unwrap_or_else(|| "localhost".into());
    let mut written = Vec::new();
    // Epoch and batch scalars come from training histories only ([`super::Reported`] facts).
    for step in &results.steps {
        let scalars: Vec<&super::Scalar> =
            step.scalars.iter().filter(|s| matches!(s.series, Series::Epoch | Series::Batch)).collect();
        if scalars.is_empty() {
            continue;
        }
        let step_dir = run_dir.join(&step.step);
        fs::create_dir_all(&step_dir)
            .map_err(|e| TrackingError::new(format!("creating {}: {e}", step_dir.display())))?;
        // The training ended about now: its epochs' durations place the points before it.
        let total = scalars.iter().filter_map(|s| s.offset).fold(0.0, f64::max);
        let start = now - total;
        let mut bytes = Vec::new();
        record(&mut bytes, &event(start, 0, Body::FileVersion("brain.Event:2")));
        // One event per series and step number, with every field measured there.
        let mut groups: Vec<Group> = Vec::new();
        for s in scalars {
            let (prefix, series) = match s.series {
                Series::Epoch => ("epoch", 0),
                _ => ("batch", 1),
            };
            let value = (format!("{prefix}/{}", s.name), s.value as f32);
            match groups.iter_mut().find(|g| g.series == series && g.step == s.step) {
                Some(g) => g.values.push(value),
                None => groups.push(Group {
                    series,
                    step: s.step,
                    wall: start + s.offset.unwrap_or(total),
                    values: vec![value],
                }),
            }
        }
        for g in &groups {
            record(&mut bytes, &event(g.wall, g.step as i64, Body::Summary(&g.values)));
        }
        let path = step_dir.join(format!("events.out.tfevents.{}.{}.pipe", now as u64, sanitize(&host)));
        let mut file =
            fs::File::create(&path).map_err(|e| TrackingError::new(format!("creating {}: {e}", path.display())))?;
        file.write_all(&bytes).map_err(|e| TrackingError::new(format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// The run's folder: its id, and the variant of a sweep (`1764601294000-4242-00_lr=3e-4`).
pub fn run_folder(run: &RunRecord) -> String {
    match &run.variant {
        Some(v) => format!("{}_{}", run.id, sanitize(v)),
        None => run.id.clone(),
    }
}

/// A name safe as one path component.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || "._=,-+".contains(c) { c } else { '_' }).collect()
}

/// The values of one event: a series (0 epoch, 1 batch) at one step number.
struct Group {
    series: u8,
    step: u64,
    wall: f64,
    values: Vec<(String, f32)>,
}

enum Body<'a> {
    FileVersion(&'a str),
    Summary(&'a [(String, f32)]),
}

/// An `Event` message.
fn event(wall_time: f64, step: i64, body: Body) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(0x09); // field 1, 64-bit
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        out.push(0x10); // field 2, varint
        varint(&mut out, step as u64);
    }
    match body {
        Body::FileVersion(v) => bytes_field(&mut out, 3, v.as_bytes()),
        Body::Summary(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut v = Vec::new();
                bytes_field(&mut v, 1, tag.as_bytes());
                v.push(0x15); // field 2, 32-bit
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(&mut out, 5, &summary);
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited field.
fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
fn record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CRC32C.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_with_masked_crc32c() {
        // CRC-32C of "123456789" is 0xE3069283 (the check value of the Castagnoli polynomial).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        let mut out = Vec::new();
        record(&mut out, b"abc");
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(&out[12..15], b"abc");
        let e = event(1.5, 300, Body::Summary(&[("batch/loss".into(), 0.5)]));
        // wall_time, then step 300 as a two-byte varint (0xac 0x02), then the summary.
        assert_eq!(&e[..9], &[0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
        assert_eq!(&e[9..12], &[0x10, 0xac, 0x02]);
        assert_eq!(e[12], 0x2a);
    }
}
