"""`pipe predict` against `transformers.pipeline("text-classification")`, side by side in one
run (see steps/BENCHMARKS_PREDICT.md).

The first --rows texts of TABLE (.csv read with Python's csv module, so quoted fields with
newlines; .jsonl/.ndjson; .parquet with pyarrow; else tab separated, quoting off, as pipe reads
NSMC) are scored by both sides on --threads CPU threads, every class's probability, in batches
of --batch-size, truncated to the tokenizer's model_max_length (pipe predict's default):

- Python: `transformers.pipeline("text-classification", model=MODEL_DIR, top_k=None)`, timed in
  this process after one warm-up batch (importing torch and building the pipeline timed apart);
- pipe: the `pipe predict` binary given with --pipe (the one the README builds; no cargo in the
  loop), a fresh process per run: `BIN --threads T predict MODEL_DIR --input ROWS.jsonl
  --text-column text --format csv --batch-size B`. Its whole wall time is timed, and so is the
  same command on a 1-row file; their difference is the time of the other rows-1, so
  (rows-1) / (t_rows - t_1) is pipe's rate with process start and model loading taken out, as
  on the Python side.

The sides alternate within each of --runs rounds, so a change in the machine's load hits
both; each figure is the median over the rounds. Last, the largest difference between the two
sides' probabilities on the same rows is printed, and whether they pick the same class.

    /work/venv/bin/python steps/benches/predict_python.py MODEL_DIR TABLE --pipe target/debug/pipe
        [--rows 2000] [--runs 5] [--batch-size 64] [--column text] [--threads 2]

Without --pipe, only the Python side runs (and --compare CSV compares with a `predict` CSV).
"""

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

STARTED = time.perf_counter()


def read_texts(path, column):
    name = path.lower()
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return [row[column] for row in csv.DictReader(f)]
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)[column] for line in f if line.strip()]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=[column]).column(column).to_pylist()
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    i = header.index(column)
    return [line.split("\t")[i] for line in lines[1:]]


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


def run_pipe(binary, threads, model_dir, rows_file, batch_size):
    """Wall time of one `pipe predict` process and its stdout (CSV)."""
    cmd = [binary, "--threads", str(threads), "predict", model_dir, "--input", rows_file,
           "--text-column", "text", "--format", "csv", "--batch-size", str(batch_size)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("table")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--column", default="text")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pipe", default=None, help="the pipe binary to time beside transformers")
    p.add_argument("--compare", default=None, help="without --pipe: a predict CSV of the same rows")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import pipeline

    texts = read_texts(args.table, args.column)[: args.rows]
    clf = pipeline("text-classification", model=args.model_dir, device=-1, top_k=None)
    startup = time.perf_counter() - STARTED
    max_length = clf.tokenizer.model_max_length
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"import + load {startup:.2f}s; {len(texts)} rows of {args.table}, batch {args.batch_size}, "
          f"max_length {max_length}")

    def python_once():
        return clf(texts, batch_size=args.batch_size, truncation=True, max_length=max_length)

    clf(texts[: args.batch_size], batch_size=args.batch_size, truncation=True, max_length=max_length)  # warm-up
    work = tempfile.mkdtemp(prefix="bench-predict.")
    rows_file, one_file = os.path.join(work, "rows.jsonl"), os.path.join(work, "one.jsonl")
    write_jsonl(rows_file, texts)
    write_jsonl(one_file, texts[:1])
    py_rates, pipe_full, pipe_one, out, pipe_csv = [], [], [], None, None
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        out = python_once()
        seconds = time.perf_counter() - started
        py_rates.append(len(texts) / seconds)
        line = f"run {run}: transformers {seconds:.2f}s ({len(texts) / seconds:.1f} rows/s)"
        if args.pipe:
            full, pipe_csv = run_pipe(args.pipe, args.threads, args.model_dir, rows_file, args.batch_size)
            one, _ = run_pipe(args.pipe, args.threads, args.model_dir, one_file, args.batch_size)
            pipe_full.append(full)
            pipe_one.append(one)
            line += f"; pipe predict {full:.2f}s for {len(texts)} rows, {one:.2f}s for 1 row"
        print(line, flush=True)

    py = statistics.median(py_rates)
    print(f"transformers pipeline: median {py:.1f} rows/s over {args.runs} runs (load excluded; "
          f"import + load {startup:.2f}s)")
    if args.pipe:
        full, one = statistics.median(pipe_full), statistics.median(pipe_one)
        rate = (len(texts) - 1) / (full - one)
        print(f"pipe predict: median {full:.2f}s per process for {len(texts)} rows, {one:.2f}s for 1 row "
              f"(start + load): {rate:.1f} rows/s with start and load taken out")
        print(f"ratio pipe / transformers, rows/s (load excluded): {rate / py:.2f}")
        python_total = startup + len(texts) / py
        print(f"whole process for {len(texts)} rows: pipe {full:.2f}s, Python (import + load + score) "
              f"{python_total:.2f}s: ratio transformers / pipe {python_total / full:.2f}")
        ours = list(csv.DictReader(io.StringIO(pipe_csv)))
    elif args.compare:
        with open(args.compare, newline="", encoding="utf-8") as f:
            ours = list(csv.DictReader(f))
    else:
        return
    if len(ours) != len(out):
        sys.exit(f"error: pipe gave {len(ours)} rows, transformers {len(out)}")
    worst, same = 0.0, 0
    for row, scores in zip(ours, out):
        for s in scores:
            worst = max(worst, abs(s["score"] - float(row[f"p_{s['label']}"])))
        same += max(scores, key=lambda s: s["score"])["label"] == row["predicted"]
    print(f"largest probability difference pipe vs transformers: {worst:.2e} over {len(ours)} rows; "
          f"same predicted class on {same} of {len(ours)}")


if __name__ == "__main__":
    main()
