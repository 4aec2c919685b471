"""Cleans an NSMC-style table (id<TAB>document<TAB>label): drops reviews shorter than
MIN_LEN characters and repeated reviews (the first one stays). Run by the `clean_*` steps of
pipelines/nsmc-clean.yaml (`kind: command`); standard library only.

    python3 clean_reviews.py IN.tsv OUT.tsv MIN_LEN
"""
import sys


def main(src, dst, min_len):
    seen = set()
    kept = short = repeated = 0
    with open(src, encoding="utf-8", newline="") as rows, open(dst, "w", encoding="utf-8", newline="") as out:
        out.write(rows.readline())
        for line in rows:
            fields = line.rstrip("\n").split("\t")
            text = fields[1].strip() if len(fields) == 3 else ""
            if len(text) < min_len:
                short += 1
            elif text in seen:
                repeated += 1
            else:
                seen.add(text)
                kept += 1
                out.write(line)
    print(f"kept {kept} reviews; dropped {short} shorter than {min_len} characters and {repeated} repeated")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
