#!/usr/bin/env python3
"""A real English text-classification set from Debian's `fortunes` package: each fortune file
is a topic, its entries (separated by lines holding only `%`) are the rows. Writes a stratified
train/test split as CSV (Python's `csv` module: quoted fields, embedded newlines, doubled
quotes), JSON Lines and, when pyarrow is installed, Parquet -- the same rows in each, columns
`text` and `topic` (a string label).

Get the fortune files with `sudo apt-get install fortunes` (they land in
/usr/share/games/fortunes), or without root:

    apt-get download fortunes fortunes-min && for d in fortunes*.deb; do dpkg-deb -x "$d" ex; done
    python3 scripts/fortunes-dataset.py --fortunes ex/usr/share/games/fortunes --out /tmp/fortunes

Cleaning, so that a row's text is what a reader sees: overstruck characters (`x<BS>y`, the
files' old way of underlining) keep only the last character, trailing whitespace is cut, empty
entries are dropped, and an entry whose text occurs more than once (within a topic or across
the chosen topics) is kept once only if all its copies share a topic, else dropped -- so no test
row has a copy in the training table, and no text has two labels.

The split is per topic (every topic keeps its share in both tables), decided by --seed alone;
the rows of each table are shuffled by the same seed. Prints each topic's row counts.
"""

import argparse
import collections
import csv
import json
import os
import random
import sys

DEFAULT_TOPICS = "computers,politics,science,law,food,sports"


def entries(path):
    """The cleaned entries of one fortune file, in file order."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    out, lines = [], []
    for line in raw.split("\n") + ["%"]:
        if line.rstrip() == "%":
            text = "\n".join(lines).strip("\n").rstrip()
            if text.strip():
                out.append(text)
            lines = []
        else:
            lines.append(unstrike(line).rstrip())
    return out


def unstrike(line):
    """`x<BS>y` -> `y`: terminal overstriking (bold, underline) reduced to the character shown."""
    chars = []
    for c in line:
        if c == "\b":
            if chars:
                chars.pop()
        else:
            chars.append(c)
    return "".join(chars)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fortunes", default="/usr/share/games/fortunes", help="the fortune files' directory")
    p.add_argument("--topics", default=DEFAULT_TOPICS, help="comma-separated file names (the labels)")
    p.add_argument("--out", required=True, help="directory for train.csv, test.csv, .jsonl, .parquet")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()

    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    by_text = collections.defaultdict(set)
    for topic in topics:
        path = os.path.join(args.fortunes, topic)
        if not os.path.isfile(path):
            sys.exit(f"error: no fortune file {path} (install `fortunes`, or give --fortunes DIR)")
        for text in entries(path):
            by_text[text].add(topic)
    # One row per distinct text with a single topic; dict order is first-seen, so deterministic.
    rows_by_topic = collections.defaultdict(list)
    ambiguous = 0
    for text, owners in by_text.items():
        if len(owners) == 1:
            rows_by_topic[next(iter(owners))].append(text)
        else:
            ambiguous += 1

    rng = random.Random(args.seed)
    train, test = [], []
    print(f"{'topic':<12} {'train':>6} {'test':>6}")
    for topic in topics:
        texts = rows_by_topic[topic][:]
        rng.shuffle(texts)
        n_test = round(len(texts) * args.test_fraction)
        test += [{"text": t, "topic": topic} for t in texts[:n_test]]
        train += [{"text": t, "topic": topic} for t in texts[n_test:]]
        print(f"{topic:<12} {len(texts) - n_test:>6} {n_test:>6}")
    rng.shuffle(train)
    rng.shuffle(test)
    print(f"{'all':<12} {len(train):>6} {len(test):>6}  ({ambiguous} texts under several topics dropped)")

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pa = None
    os.makedirs(args.out, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(os.path.join(args.out, f"{name}.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "topic"])  # QUOTE_MINIMAL: RFC 4180
            w.writeheader()
            w.writerows(rows)
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        if pa is None:
            continue
        table = pa.table({"text": [r["text"] for r in rows], "topic": [r["topic"] for r in rows]})
        pq.write_table(table, os.path.join(args.out, f"{name}.parquet"))
    print(f"written to {args.out}: train/test .csv, .jsonl" + (", .parquet" if pa else " (no pyarrow: no .parquet)"))


if __name__ == "__main__":
    main()
