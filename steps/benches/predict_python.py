"""transformers side of the `predict` benchmark (see steps/BENCHMARKS_PREDICT.md).

The first --rows texts of TABLE (tab separated, quoting off, as pipe reads NSMC; `.csv`: comma
separated with quotes) through `transformers.pipeline("text-classification", model=MODEL_DIR)`
on the CPU, in batches of --batch-size, truncated to the tokenizer's model_max_length (what
pipe's `predict` does by default), every class's score (`top_k=None`). --runs runs over the same
rows after one warm-up call; prints each run's rows/s and the median. torch uses every core
(`torch.get_num_threads()` is printed). With --compare CSV (bench_predict's OUT_CSV), the
largest difference between the two sides' probabilities is printed too.

    /work/venv/bin/python steps/benches/predict_python.py MODEL_DIR TABLE [--rows 2000] [--runs 5]
        [--batch-size 64] [--column document] [--compare OUT_CSV]
"""

import argparse
import csv
import statistics
import time


def read_texts(path, column):
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return [row[column] for row in csv.DictReader(f)]
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    i = header.index(column)
    return [line.split("\t")[i] for line in lines[1:]]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("table")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--column", default="document")
    p.add_argument("--compare", default=None)
    args = p.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    texts = read_texts(args.table, args.column)[: args.rows]
    started = time.perf_counter()
    clf = pipeline("text-classification", model=args.model_dir, device=-1, top_k=None)
    load = time.perf_counter() - started
    max_length = clf.tokenizer.model_max_length
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load {load:.2f}s; {len(texts)} rows, batch {args.batch_size}, max_length {max_length}")

    def once():
        return clf(texts, batch_size=args.batch_size, truncation=True, max_length=max_length)

    clf(texts[: args.batch_size], batch_size=args.batch_size, truncation=True)  # warm-up
    rates, out = [], None
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        out = once()
        seconds = time.perf_counter() - started
        rates.append(len(texts) / seconds)
        print(f"run {run}: {seconds:.2f}s, {len(texts) / seconds:.1f} rows/s")
    print(f"transformers pipeline: median {statistics.median(rates):.1f} rows/s over {args.runs} runs")

    if args.compare:
        with open(args.compare, newline="", encoding="utf-8") as f:
            ours = list(csv.DictReader(f))
        worst = 0.0
        for row, scores in zip(ours, out):
            for s in scores:
                worst = max(worst, abs(s["score"] - float(row[f"p_{s['label']}"])))
        print(f"largest probability difference to {args.compare}: {worst:.2e} over {len(ours)} rows")


if __name__ == "__main__":
    main()
