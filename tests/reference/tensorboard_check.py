#!/usr/bin/env python3
"""loraps' TensorBoard event files read by the real tensorboard package.

  python3 tests/reference/tensorboard_check.py                 the committed golden run
  python3 tests/reference/tensorboard_check.py RUN_DIR         any run folder (OUT/runs): prints
  python3 tests/reference/tensorboard_check.py RUN_DIR --metrics OUT/metrics.jsonl
                                                               and compares with the JSONL
  python3 tests/reference/tensorboard_check.py RUN_DIR --expect LISTING
                                                               and requires that listing

For every event file of RUN_DIR (name order, as TensorBoard reads a run) it checks each record's
framing with tensorboard's own masked CRC32C and parses it as tensorboard's Event proto, then
loads the folder with tensorboard's EventAccumulator (which applies SessionLog START: a resumed
run's new file replaces the earlier files' steps from its start on) and prints every scalar as
"scalar TAG STEP VALUE" (sorted by tag, then step; VALUE as %.9g of the stored float) and every
tag's description as "description TAG: TEXT" (sorted by tag): the format of the C reader's view
in tests/unit/test_tb_events.c.

Without RUN_DIR it reads golden/tensorboard/run/ (two files written by loraps' writer: a run to
step 6 and its resume from step 5) and requires the output to equal
golden/tensorboard/expected_scalars.txt line for line. With --metrics it requires, for each line
of the metrics file, train/loss, train/learning_rate and train/grad_norm at its step (and eval/loss
at its val_step where it has one) to equal the line's value rounded to float32; a resumed run's
lines replace the earlier ones from their step on. Exits 1 on any difference.
"""

import argparse
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden", "tensorboard")


def event_files(run):
    names = sorted(n for n in os.listdir(run) if "tfevents" in n)
    if not names:
        sys.exit(f"tensorboard_check: no event files in {run}")
    return [os.path.join(run, n) for n in names]


def check_records(path):
    """Every record's two CRCs and its Event; returns the number of records."""
    data = open(path, "rb").read()
    pos = n = 0
    while pos < len(data):
        if len(data) - pos < 12:
            sys.exit(f"{path}: record at byte {pos} cut short in its length")
        head = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", head)
        (head_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked_crc32c(head) != head_crc:
            sys.exit(f"{path}: record at byte {pos}: length CRC mismatch")
        body = data[pos + 12:pos + 12 + length]
        tail = data[pos + 12 + length:pos + 16 + length]
        if len(body) != length or len(tail) != 4:
            sys.exit(f"{path}: record at byte {pos} cut short in its data")
        if masked_crc32c(body) != struct.unpack("<I", tail)[0]:
            sys.exit(f"{path}: record at byte {pos}: data CRC mismatch")
        ev = event_pb2.Event()
        ev.ParseFromString(body)
        if n == 0 and ev.file_version != "brain.Event:2":
            sys.exit(f"{path}: first record is not the file version: {ev}")
        pos += 16 + length
        n += 1
    return n


def view(run):
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    lines, values = [], {}
    for tag in tags:
        for e in sorted(acc.Scalars(tag), key=lambda e: e.step):
            lines.append(f"scalar {tag} {e.step} {e.value:.9g}")
            values[(tag, e.step)] = e.value
    for tag in tags:
        try:
            text = acc.SummaryMetadata(tag).summary_description
        except KeyError:
            continue
        if text:
            lines.append(f"description {tag}: {text}")
    return lines, values


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def metrics_lines(path):
    """(line number, object) per step; a resumed run's lines replace the earlier ones from their
    step on, as loraps report reads them."""
    kept = []
    for line_no, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        m = json.loads(line)
        kept = [(n, k) for n, k in kept if k["step"] < m["step"]] + [(line_no, m)]
    return kept


def compare_metrics(values, metrics_path):
    problems, checked = [], 0
    for line_no, m in metrics_lines(metrics_path):
        pairs = [("train/loss", m["loss"], m["step"]), ("train/learning_rate", m["lr"], m["step"])]
        if "grad_norm" in m:
            pairs.append(("train/grad_norm", m["grad_norm"], m["step"]))
        if "val_loss" in m:
            pairs.append(("eval/loss", m["val_loss"], m["val_step"]))
        for tag, want, step in pairs:
            got = values.get((tag, step))
            checked += 1
            if got is None or got != f32(want):
                problems.append(f"{metrics_path}:{line_no}: {tag} at step {step}: "
                                f"tensorboard {got}, metrics {want}")
    return checked, problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default=os.path.join(GOLDEN, "run"))
    ap.add_argument("--metrics", help="a metrics.jsonl to compare train/loss and eval/loss with")
    ap.add_argument("--expect", help="the listing to require (default for the golden run: "
                    "golden/tensorboard/expected_scalars.txt)")
    args = ap.parse_args()
    import tensorboard
    records = sum(check_records(p) for p in event_files(args.run))
    lines, values = view(args.run)
    print("\n".join(lines))
    print(f"# tensorboard {tensorboard.__version__}: {len(event_files(args.run))} files, "
          f"{records} records with valid CRCs, {sum(l.startswith('scalar') for l in lines)} "
          f"scalars", file=sys.stderr)
    failed = False
    if args.metrics:
        checked, problems = compare_metrics(values, args.metrics)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"# metrics: {checked} values compared, {len(problems)} differ", file=sys.stderr)
        failed |= bool(problems)
    if args.expect is None and args.run == os.path.join(GOLDEN, "run"):
        args.expect = os.path.join(GOLDEN, "expected_scalars.txt")
    if args.expect:
        want = open(args.expect).read().splitlines()
        if lines != want:
            failed = True
            for a, b in zip(lines + [""] * len(want), want + [""] * len(lines)):
                if a != b:
                    print(f"# differs: tensorboard '{a}', expected '{b}'", file=sys.stderr)
                    break
        print(f"# {args.expect}: {'FAIL' if failed else 'PASS'}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
