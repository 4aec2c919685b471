"""What `scripts/gpu-check.sh` computes between its `pipe` runs: where a step's outputs are in a
cache, per-update losses from `pipe run` logs, the comparison of a GPU run with the CPU
reference (tolerances below), the throughput table, and the summary.

    python3 steps/benches/gpu_check.py artifact CACHE RUN_JSON STEP OUTPUT
    python3 steps/benches/gpu_check.py compare CACHE CPU_PREFIX GPU_PREFIX PRECISION [F32_GPU_PREFIX]
    python3 steps/benches/gpu_check.py pipe-result CACHE RUN_JSON MODEL_DIR BATCHES_DIR SHAPE PRECISION
    python3 steps/benches/gpu_check.py throughput OUT_JSON RESULT_JSON...
    python3 steps/benches/gpu_check.py summary OUT_DIR

A PREFIX names a pair of files `PREFIX.json` (`pipe run --json`) and `PREFIX.log` (its stderr).
Needs numpy and safetensors for the weight comparison (both on the GPU machine).
"""

import json
import re
import sys
from pathlib import Path

# Per-update loss tolerances of a GPU run against the CPU reference (absolute, on losses printed
# with 4 decimals). f32 against f32: the same function, summed in another order, 50 updates.
# bf16 against the CPU's bf16: products rounded alike, but accumulated differently, so roundings
# land differently. bf16 against f32: the mean over the last 10 updates, relative.
TOLERANCE = {"f32": 2e-3, "bf16": 3e-2}
BF16_VS_F32_RELATIVE = 0.03
# Weights after the 50 updates, relative L2 distance to the CPU's: against the size of the
# update where the start is known (fine-tuning from `init`), else against the weights.
WEIGHT_TOLERANCE = {"f32": 0.05, "bf16": None}


def artifact(cache: Path, run_json: Path, step: str, output: str) -> Path:
    run = json.loads(Path(run_json).read_text())
    key = next(s["key"] for s in run["steps"] if s["name"] == step)
    manifest = json.loads((Path(cache) / "steps" / key / "manifest.json").read_text())
    return Path(cache) / "steps" / key / manifest["dir"] / output


def losses(log: Path) -> dict:
    """{step: [(batch, loss, acc), ...]} from the `[Epoch e Batch b/n] loss=…, acc=…` lines."""
    out, step = {}, None
    header = re.compile(r"^\[\d+/\d+\]\s+(\S+)\s+running")
    line_re = re.compile(r"\[Epoch (\d+) Batch (\d+)/(\d+)\] loss=([-\d.naif]+), lr=[\d.e-]+, acc=([\d.]+)")
    for line in Path(log).read_text(errors="replace").splitlines():
        m = header.match(line.strip())
        if m:
            step = m.group(1)
            continue
        m = line_re.search(line)
        if m and step:
            out.setdefault(step, []).append((int(m.group(2)), float(m.group(4)), float(m.group(5))))
    return out


def load_weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return {k: v.astype("float64") for k, v in load_file(str(path)).items()}


def weight_report(cpu: dict, gpu: dict, init: dict | None) -> dict:
    import numpy as np

    worst, worst_name, unmoved, nonfinite = 0.0, None, [], []
    for name, c in cpu.items():
        g = gpu[name]
        if not np.isfinite(g).all():
            nonfinite.append(name)
            continue
        start = init.get(name) if init else None
        if start is not None:
            if np.array_equal(g, start):
                unmoved.append(name)
            scale = np.linalg.norm(c - start)
        else:
            scale = np.linalg.norm(c)
        rel = float(np.linalg.norm(g - c) / max(scale, 1e-30))
        if rel > worst:
            worst, worst_name = rel, name
    return {"worst_relative_distance": worst, "worst_tensor": worst_name, "unmoved": unmoved, "nonfinite": nonfinite}


def compare(cache: Path, cpu_prefix: str, gpu_prefix: str, precision: str, f32_gpu_prefix: str | None = None) -> dict:
    cpu, gpu = losses(Path(cpu_prefix + ".log")), losses(Path(gpu_prefix + ".log"))
    result = {"precision": precision, "tolerance": TOLERANCE[precision], "steps": {}, "ok": True}
    for step in ["pretrain", "finetune"]:
        c, g = cpu.get(step, []), gpu.get(step, [])
        entry = {"updates_cpu": len(c), "updates_gpu": len(g)}
        if len(c) != 50 or len(g) != 50:
            entry.update(ok=False, why="expected 50 logged updates on each side")
        else:
            diffs = [abs(a[1] - b[1]) for a, b in zip(c, g)]
            entry.update(
                max_loss_difference=max(diffs),
                at_update=diffs.index(max(diffs)) + 1,
                first_loss=(c[0][1], g[0][1]),
                last_loss=(c[-1][1], g[-1][1]),
                ok=max(diffs) <= TOLERANCE[precision],
            )
        result["steps"][step] = entry
        result["ok"] &= entry["ok"]
    if f32_gpu_prefix:
        f = losses(Path(f32_gpu_prefix + ".log"))
        for step in ["pretrain", "finetune"]:
            a, b = [x[1] for x in f.get(step, [])][-10:], [x[1] for x in gpu.get(step, [])][-10:]
            if len(a) == 10 and len(b) == 10:
                rel = abs(sum(b) - sum(a)) / abs(sum(a))
                ok = rel <= BF16_VS_F32_RELATIVE
                result["steps"][step]["bf16_vs_f32_last10_relative"] = rel
                result["steps"][step]["ok"] &= ok
                result["ok"] &= ok
    try:
        import numpy  # noqa: F401

        cpu_run, gpu_run = Path(cpu_prefix + ".json"), Path(gpu_prefix + ".json")
        weights = {}
        init = load_weights(artifact(cache, cpu_run, "init", "model") / "model.safetensors")
        for step, start in [("finetune", init), ("pretrain", None)]:
            c = load_weights(artifact(cache, cpu_run, step, "model") / "model.safetensors")
            g = load_weights(artifact(cache, gpu_run, step, "model") / "model.safetensors")
            report = weight_report(c, g, {k: v for k, v in start.items() if k.startswith("bert.")} if start else None)
            limit = WEIGHT_TOLERANCE[precision]
            report["tolerance"] = limit
            report["ok"] = not report["unmoved"] and not report["nonfinite"] and (
                limit is None or report["worst_relative_distance"] <= limit
            )
            weights[step] = report
            result["ok"] &= report["ok"]
        result["weights"] = weights
    except ImportError as e:
        result["weights"] = f"not compared: {e}"
    return result


def epoch_flops(model_dir: Path, batches_dir: Path) -> list:
    """Matrix-product FLOPs of each epoch in BATCHES_DIR/batches.json (as train_gpu_python.py counts)."""
    from types import SimpleNamespace

    from safetensors.numpy import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    from train_gpu_python import matmul_flops

    config = SimpleNamespace(**json.loads((Path(model_dir) / "config.json").read_text()))
    valid = load_file(str(Path(batches_dir) / "tensors" / "tensors.safetensors"))["valid_length"]
    spec = json.loads((Path(batches_dir) / "batches.json").read_text())
    return [matmul_flops(config, [(len(b), int(max(valid[r] for r in b))) for b in epoch]) for epoch in spec["epochs"]]


def pipe_result(cache: Path, run_json: Path, model_dir: Path, batches_dir: Path, shape: str, precision: str) -> dict:
    """The pipe side of one throughput run: fine-tune's per-epoch samples/s from its metrics."""
    run = json.loads(Path(run_json).read_text())
    if not run.get("ok"):
        return {"side": "pipe", "shape": shape, "precision": precision, "error": [s.get("error") for s in run["steps"]]}
    metrics = json.loads(artifact(cache, run_json, "finetune", "metrics").read_text())
    flops = epoch_flops(model_dir, batches_dir)
    epochs = []
    for e in metrics["epochs"]:
        f = flops[(e["epoch"] - 1) % len(flops)]
        epochs.append(
            {
                "epoch": e["epoch"],
                "seconds": e["seconds"],
                "samples_per_second": e["samples_per_second"],
                "matmul_tflops": f / e["seconds"] / 1e12,
                "train_loss": e["train_loss"],
            }
        )
    return {"side": "pipe", "shape": shape, "precision": precision, "epochs": epochs}


def throughput(out: Path, results: list) -> None:
    """Merges pipe and PyTorch result files into one table (epochs after the first)."""
    rows = []
    for path in results:
        r = json.loads(Path(path).read_text())
        if "error" in r or not r.get("epochs"):
            rows.append({**r, "samples_per_second": None, "matmul_tflops": None})
            continue
        later = r["epochs"][1:] or r["epochs"]
        rate = sorted(e["samples_per_second"] for e in later)[len(later) // 2]
        rows.append(
            {
                "side": r["side"],
                "shape": r.get("shape"),
                "precision": r["precision"],
                "samples_per_second": rate,
                "matmul_tflops": (sorted(e.get("matmul_tflops", 0) for e in later)[len(later) // 2]),
                "epochs": r["epochs"],
            }
        )
    Path(out).write_text(json.dumps(rows, indent=1))


def summary(out_dir: Path) -> str:
    out_dir = Path(out_dir)
    lines = ["# gpu-check summary", ""]
    for name in ["correctness-f32.json", "correctness-bf16.json"]:
        p = out_dir / name
        if p.exists():
            r = json.loads(p.read_text())
            lines.append(f"## correctness {r['precision']}: {'PASS' if r['ok'] else 'FAIL'} (tolerance {r['tolerance']})")
            for step, e in r["steps"].items():
                lines.append(f"- {step}: {json.dumps(e)}")
            if isinstance(r.get("weights"), dict):
                for step, w in r["weights"].items():
                    lines.append(
                        f"- weights {step}: worst relative distance {w['worst_relative_distance']:.3g} "
                        f"({w['worst_tensor']}), unmoved {len(w['unmoved'])}, non-finite {len(w['nonfinite'])}, ok {w['ok']}"
                    )
            lines.append("")
    p = out_dir / "throughput.json"
    if p.exists():
        rows = json.loads(p.read_text())
        lines += ["## throughput (median of epochs after the first)", "", "| shape | precision | side | samples/s | matmul TFLOP/s |", "|---|---|---|---|---|"]
        for r in rows:
            if r["samples_per_second"] is None:
                lines.append(f"| {r['shape']} | {r['precision']} | {r['side']} | failed: {r.get('error')} | |")
            else:
                lines.append(
                    f"| {r['shape']} | {r['precision']} | {r['side']} | {r['samples_per_second']:.1f} | {r['matmul_tflops']:.2f} |"
                )
        lines.append("")
    p = out_dir / "nsmc.json"
    if p.exists():
        r = json.loads(p.read_text())
        lines += ["## nsmc-gpu.yaml", "", "```", json.dumps(r, indent=1), "```"]
    text = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(text)
    return text


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "artifact":
        print(artifact(Path(args[0]), Path(args[1]), args[2], args[3]))
    elif cmd == "compare":
        r = compare(Path(args[0]), args[1], args[2], args[3], args[4] if len(args) > 4 else None)
        print(json.dumps(r, indent=1))
    elif cmd == "pipe-result":
        print(json.dumps(pipe_result(Path(args[0]), Path(args[1]), Path(args[2]), Path(args[3]), args[4], args[5])))
    elif cmd == "throughput":
        throughput(Path(args[0]), args[1:])
    elif cmd == "summary":
        print(summary(Path(args[0])))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
