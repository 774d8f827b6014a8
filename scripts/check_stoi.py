#!/usr/bin/env python3
"""Cross-checks ssm::stoi / ssm::estoi against pystoi.

Makes (clean, processed) pairs from real speech: white noise and recorded
noise at several SNRs, the real VoiceBank+DEMAND noisy/clean pairs, and
oracle time-frequency masking (the "time-frequency weighted" case STOI was
made for). Each pair is written as 32-bit float WAV so that both sides read
the same samples, scored by pystoi and by the C++ code (through the test
binary's StoiCrossCheck.Files case), and the differences are printed.

Pairs go in at 16 kHz (both resample: pystoi with its Octave-compatible
polyphase filter, ssm with libsamplerate) and at 10 kHz, resampled here with
pystoi's own resampler, where neither side resamples and the framing alone
is compared.

Needs: pip install pystoi soundfile (numpy and scipy come with pystoi), and a
build of tests/test_stoi (scripts/build, or SSM_BUILD_DIR).

  scripts/check_stoi.py [--data DIR] [--build DIR] [--keep DIR]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from pystoi import stoi
from pystoi.utils import resample_oct

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def load(path):
    x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    if rate != RATE:
        sys.exit(f"{path}: expected {RATE} Hz, got {rate}")
    return x.mean(axis=1)


def add_noise(clean, noise, snr_db):
    """clean + noise scaled to snr_db (powers over the whole clip)."""
    noise = noise[: len(clean)]
    g = np.sqrt(np.sum(clean**2) / np.sum(noise**2) * 10 ** (-snr_db / 10))
    return clean + g * noise


def oracle_mask(clean, noisy, kind):
    """Ideal binary mask (0 dB criterion) or Wiener gain from the true noise,
    applied in a 512-point STFT: processed speech with real clipping of the
    band envelopes."""
    from scipy.signal import istft, stft

    _, _, S = stft(clean, nperseg=512)
    _, _, Y = stft(noisy, nperseg=512)
    N = Y - S
    ps, pn = np.abs(S) ** 2, np.abs(N) ** 2
    gain = (ps > pn).astype(float) if kind == "ibm" else ps / (ps + pn + 1e-12)
    _, y = istft(gain * Y, nperseg=512)
    return y[: len(clean)]


def make_cases(data, rng):
    """(name, clean, processed) at 16 kHz."""
    speech = []
    for folder, names in [
        ("speech/en_f", ["agent-alreadyon", "auth-incorrect", "conf-adminmenu-18"]),
        ("speech/it_m", ["agent-incorrect", "agent-user", "conf-adminmenu-menu8"]),
    ]:
        for n in names:
            speech.append((f"{folder.split('/')[-1]}/{n}", load(data / folder / f"{n}.flac")))
    tap = load(data / "noise/running_tap.flac")
    dishes = load(data / "noise/doing_the_dishes.flac")

    cases = []
    for i, (name, x) in enumerate(speech):
        white = rng.standard_normal(len(x))
        for snr in (-5, 0, 5, 10, 20):
            cases.append((f"{name} white {snr:+d} dB", x, add_noise(x, white, snr)))
        real = (tap if i % 2 == 0 else dishes)[RATE * 5 * i :]
        label = "tap" if i % 2 == 0 else "dishes"
        for snr in (-5, 5):
            cases.append((f"{name} {label} {snr:+d} dB", x, add_noise(x, real, snr)))
        noisy = add_noise(x, white, -5)
        cases.append((f"{name} white -5 dB, IBM", x, oracle_mask(x, noisy, "ibm")))
        cases.append((f"{name} white -5 dB, Wiener", x, oracle_mask(x, noisy, "wiener")))
    for f in sorted((data / "pairs/clean").glob("*.flac")):
        cases.append((f"VoiceBank {f.stem} real pair", load(f), load(data / "pairs/noisy" / f.name)))
    return cases


def cpp_scores(binary, pairs):
    """{(clean_path, processed_path): (stoi, estoi)} from the test binary."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for c, p in pairs:
            f.write(f"{c} {p}\n")
        listing = f.name
    try:
        out = subprocess.run(
            [str(binary), "--gtest_filter=StoiCrossCheck.Files"],
            env={**os.environ, "SSM_STOI_LIST": listing},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(listing)
    scores = {}
    for line in out.splitlines():
        if line.startswith("SCORE "):
            _, c, p, s, e = line.split()
            scores[(c, p)] = (float(s), float(e))
    missing = [pr for pr in pairs if pr not in scores]
    if missing:
        sys.exit(f"the test binary scored {len(scores)} of {len(pairs)} pairs; output:\n{out}")
    return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/denoise-dev",
                    help="denoise-dev data set (speech/, noise/, pairs/)")
    ap.add_argument("--build", type=Path, default=ROOT / os.environ.get("SSM_BUILD_DIR", "build"),
                    help="build directory holding tests/test_stoi")
    ap.add_argument("--keep", type=Path, help="write the WAVs here and keep them")
    ap.add_argument("--tol16", type=float, nargs=2, default=[1e-3, 1e-2], metavar=("STOI", "ESTOI"),
                    help="largest |difference| allowed at 16 kHz, where the resamplers differ")
    ap.add_argument("--tol10", type=float, default=1e-9, help="largest |difference| allowed at 10 kHz")
    args = ap.parse_args()

    binary = args.build / "tests/test_stoi"
    if not binary.exists():
        sys.exit(f"{binary} not found: build it first (cmake --build {args.build} --target test_stoi)")
    if not (args.data / "speech").is_dir():
        sys.exit(f"{args.data}: no speech/ folder; pass --data with the denoise-dev data set")

    rng = np.random.default_rng(20110901)
    cases = make_cases(args.data, rng)
    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    out_dir = Path(tmp.name) if tmp else args.keep
    out_dir.mkdir(parents=True, exist_ok=True)

    rows, pairs = [], []

    def add_row(name, rate, x, y, stem):
        c, p = out_dir / f"{stem}_clean.wav", out_dir / f"{stem}_processed.wav"
        sf.write(str(c), x, rate, subtype="FLOAT")
        sf.write(str(p), y, rate, subtype="FLOAT")
        x, y = x.astype(np.float64), y.astype(np.float64)
        rows.append((name, rate, str(c), str(p), stoi(x, y, rate), stoi(x, y, rate, extended=True)))
        pairs.append((str(c), str(p)))

    for i, (name, x, y) in enumerate(cases):
        # float32 on disk: both sides then start from identical samples.
        x, y = x.astype(np.float32), y.astype(np.float32)
        add_row(name, RATE, x, y, f"{i:03d}_16000")
        add_row(name, 10000, resample_oct(x, 10000, RATE).astype(np.float32),
                resample_oct(y, 10000, RATE).astype(np.float32), f"{i:03d}_10000")
    # The pairs the unit tests pin: samples/ at 16 kHz, and the generated one
    # test_stoi writes at 10 kHz.
    add_row("samples/ clean_speech vs noisy_speech", RATE, load(ROOT / "samples/clean_speech.flac"),
            load(ROOT / "samples/noisy_speech.flac"), "samples")
    subprocess.run([str(binary), "--gtest_filter=StoiCrossCheck.WriteGenerated"], check=True, capture_output=True,
                   env={**os.environ, "SSM_STOI_WRITE_DIR": str(out_dir)})
    gx, grate = sf.read(str(out_dir / "pinned_clean.wav"), dtype="float32")
    gy, _ = sf.read(str(out_dir / "pinned_processed.wav"), dtype="float32")
    add_row("test_stoi pinned generated pair", grate, gx, gy, "pinned")

    scores = cpp_scores(binary, pairs)
    print(f"{'case':46s} {'rate':>5s} {'pystoi':>9s} {'ssm':>9s} {'diff':>9s}   "
          f"{'py estoi':>9s} {'ssm':>9s} {'diff':>9s}")
    worst = {16000: [0.0, 0.0], 10000: [0.0, 0.0]}
    for name, rate, c, p, ref_s, ref_e in rows:
        s, e = scores[(c, p)]
        ds, de = s - ref_s, e - ref_e
        worst[rate][0] = max(worst[rate][0], abs(ds))
        worst[rate][1] = max(worst[rate][1], abs(de))
        print(f"{name:46s} {rate:5d} {ref_s:9.6f} {s:9.6f} {ds:+9.2e}   {ref_e:9.6f} {e:9.6f} {de:+9.2e}")
    print("\nPinned in tests/test_stoi.cpp (pystoi / ssm, full precision):")
    for name, rate, c, p, ref_s, ref_e in rows[-2:]:
        s, e = scores[(c, p)]
        print(f"  {name}: stoi {ref_s:.12f} / {s:.12f}, estoi {ref_e:.12f} / {e:.12f}")
    print()
    ok = True
    for rate, tol in ((16000, args.tol16), (10000, [args.tol10, args.tol10])):
        n = sum(1 for r in rows if r[1] == rate)
        print(f"{rate} Hz, {n} pairs: max |diff| STOI {worst[rate][0]:.2e} (allowed {tol[0]:.0e}), "
              f"ESTOI {worst[rate][1]:.2e} (allowed {tol[1]:.0e})")
        ok &= worst[rate][0] <= tol[0] and worst[rate][1] <= tol[1]
    if tmp:
        tmp.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
