#!/usr/bin/env python3
"""Lays out the SMD server-machine dataset (Su et al., KDD 2019) in its own
layout, for `ssm eval smd`:

    OUT/train/machine-G-I.txt             one row per minute, 38 comma-separated values
    OUT/test/machine-G-I.txt              the same, the second half
    OUT/test_label/machine-G-I.txt        one 0/1 per test row
    OUT/interpretation_label/machine-G-I.txt

from git directories of public repositories that hold it (read with
`git show`, nothing is checked out):

  --labels GITDIR   holds ServerMachineDataset/{test_label,interpretation_label}
                    (the dataset's own repository); copied byte for byte.
  --values GITDIR   holds the values as OmniAnomaly's preprocessing writes them,
                    data/processed/machine-G-I_{train,test}.pkl (float32 arrays
                    read from the dataset's txt files); repeatable, the first
                    that has a machine's both halves is used. The dataset's own
                    txt files are 4 MiB or more each; where a copy of those is
                    at hand, pass it as --labels with --raw and they are copied
                    as they are.

Values are written as the shortest decimal that reads back as the same
float32, i.e. the dataset's own decimals (it has at most 6 after the point).
Machines whose values are not found are listed and left out. Needs numpy.
"""
import argparse
import io
import os
import pickle
import subprocess
import sys

import numpy as np

MACHINES = [f"machine-1-{i}" for i in range(1, 9)] + [f"machine-2-{i}" for i in range(1, 10)] + \
           [f"machine-3-{i}" for i in range(1, 12)]


def git_show(gitdir, path):
    r = subprocess.run(["git", "--git-dir", gitdir, "show", f"HEAD:{path}"], capture_output=True)
    return r.stdout if r.returncode == 0 else None


def write_values(path, a):
    with open(path, "w") as f:
        for row in a:
            f.write(",".join(np.format_float_positional(v, unique=True, trim="-") for v in row) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True)
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--raw", action="store_true", help="--labels also holds the train/test txt files")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    for sub in ("train", "test", "test_label", "interpretation_label"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
    done, missing = [], []
    for m in MACHINES:
        label = git_show(a.labels, f"ServerMachineDataset/test_label/{m}.txt")
        interp = git_show(a.labels, f"ServerMachineDataset/interpretation_label/{m}.txt")
        if label is None or interp is None:
            sys.exit(f"{a.labels}: no labels of {m} (expected ServerMachineDataset/test_label/{m}.txt)")
        n_label = len(label.split())
        halves = None
        if a.raw:
            tr = git_show(a.labels, f"ServerMachineDataset/train/{m}.txt")
            te = git_show(a.labels, f"ServerMachineDataset/test/{m}.txt")
            if tr is not None and te is not None:
                halves = ("raw", tr, te)
        for g in a.values:
            if halves is not None:
                break
            tr = git_show(g, f"data/processed/{m}_train.pkl")
            te = git_show(g, f"data/processed/{m}_test.pkl")
            if tr is not None and te is not None:
                halves = ("pkl", pickle.load(io.BytesIO(tr)), pickle.load(io.BytesIO(te)))
        if halves is None:
            missing.append(m)
            continue
        kind, tr, te = halves
        if kind == "raw":
            n_test = len(te.split())
            for sub, data in (("train", tr), ("test", te)):
                with open(os.path.join(a.out, sub, m + ".txt"), "wb") as f:
                    f.write(data)
        else:
            n_test = te.shape[0]
            if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != 38 or te.shape[1] != 38:
                sys.exit(f"{m}: expected (rows, 38) arrays, got {tr.shape} and {te.shape}")
            write_values(os.path.join(a.out, "train", m + ".txt"), tr)
            write_values(os.path.join(a.out, "test", m + ".txt"), te)
        if n_test != n_label:
            sys.exit(f"{m}: {n_test} test rows but {n_label} labels")
        with open(os.path.join(a.out, "test_label", m + ".txt"), "wb") as f:
            f.write(label)
        with open(os.path.join(a.out, "interpretation_label", m + ".txt"), "wb") as f:
            f.write(interp)
        done.append(m)
        print(f"{m}: {n_test} test rows, {int(sum(int(x) for x in label.split()))} anomalous ({kind})")
    print(f"{len(done)} of {len(MACHINES)} machines in {a.out}; without values: {' '.join(missing) or 'none'}")


if __name__ == "__main__":
    main()
