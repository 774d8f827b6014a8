#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (corpus/NAME/ for fuzz_NAME):
small valid inputs and a few near misses, built by hand. Sound files are
made with sox; the detector states with the seed_detector_state program of
the fuzz build (give its path as the first argument, else they are kept).

    tests/fuzz/make_corpus.py [build-fuzz/seed_detector_state]
"""
import json
import os
import shutil
import struct
import subprocess
import sys

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
HERE = os.path.join(CORPUS, "safetensors")


def write(name, header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def tensors(entries):
    """entries: (name, dtype, shape, raw bytes) in data order."""
    header, data = {}, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def safetensors():
    os.makedirs(HERE, exist_ok=True)
    write("empty.safetensors", {})
    write("metadata_only.safetensors", {"__metadata__": {"format": "pt", "d_model": "64"}}, pad=False)

    h, d = tensors([("layers.0.mixer.in_proj.weight", "F32", [2, 2], struct.pack("<4f", 1.0, -2.5, 0.0, 3.25))])
    h["__metadata__"] = {"n_layers": "1"}
    write("one_f32.safetensors", h, d)

    h, d = tensors([
        ("layers.0.mixer.A_log", "F64", [2], struct.pack("<2d", -0.5, 1e-300)),
        ("layers.0.mixer.D", "F32", [3], struct.pack("<3f", 1.0, 1.0, 1.0)),
        ("layers.0.norm.weight", "F16", [2], struct.pack("<2H", 0x3C00, 0x0001)),
        ("layers.0.mixer.dt_bias", "BF16", [2, 1], struct.pack("<2H", 0xBFC0, 0x7F80)),
        ("step", "I64", [], struct.pack("<q", 7)),
        ("empty", "F32", [0, 3], b""),
        ("mask", "BOOL", [3], b"\x01\x00\x01"),
    ])
    h["__metadata__"] = {"model": "mamba2", "expand": "2"}
    write("mixed.safetensors", h, d)

    # Offsets out of name order and no padding.
    h = {"b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "a": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}
    write("unordered.safetensors", h, struct.pack("<f", 0.5) + b"\x07\x08", pad=False)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fdp_tail(values):
    """Bytes that libFuzzer's FuzzedDataProvider reads back as `values`:
    (byte count, value) in the order the target consumes them. It takes
    integers from the end of the input, most significant byte first."""
    taken = []
    for n, v in values:
        taken += [(v >> (8 * (n - 1 - i))) & 0xFF for i in range(n)]
    return bytes(reversed(taken))


DENOISER_MODEL = {"block": "mamba2", "d_model": 64, "n_layers": 4, "expand": 2, "head_dim": 32, "d_state": 32,
                  "d_conv": 4, "n_groups": 1, "chunk": 64, "sample_rate": 16000, "lookahead": 0}


def model_config():
    put("model_config", "denoiser.json", json.dumps(DENOISER_MODEL, indent=2))
    put("model_config", "forecaster.json", json.dumps({
        "block": "mamba2", "d_model": 8, "n_layers": 1, "expand": 2, "head_dim": 8, "d_state": 8, "d_conv": 4,
        "chunk": 64, "in_channels": 1, "out_channels": 1, "sample_rate": 1}))
    put("model_config", "mamba1_all_keys.json", json.dumps({
        "block": "mamba1", "d_model": 16, "n_layers": 2, "expand": 2, "head_dim": 8, "d_state": 4, "d_conv": 3,
        "n_groups": 1, "dt_rank": 2, "chunk": 16, "in_channels": 2, "out_channels": 3, "sample_rate": 8000,
        "lookahead": 5, "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 1e-4, "norm_eps": 1e-5}))
    put("model_config", "groups.json", '{"d_model":32,"expand":2,"head_dim":16,"n_groups":4,"d_state":16}')
    put("model_config", "defaults.json", "{}")
    put("model_config", "wrong_type.json", '{"d_model": 64.5, "block": "mamba3"}')


def train_config():
    base = {
        "model": DENOISER_MODEL,
        "training": {"steps": 100, "batch": 4, "segment": 8000, "lr": 0.002, "min_lr": 2e-05, "warmup": 10,
                     "weight_decay": 0.01, "clip": 1.0, "l1_weight": 1.0, "l2_weight": 0.0, "stft_weight": 1.0,
                     "sisdr_weight": 0.0, "seed": 0, "threads": 0},
        "data": {"speech": ["speech/en", "speech/it"], "noise": ["noise"], "snr_db": [-5, 20],
                 "level_dbfs": [-35, -10],
                 "noise_kinds": {"clip": 0.4, "white": 0.05, "pink": 0.1, "brown": 0.05, "hum": 0.1, "fan": 0.15,
                                 "babble": 0.15},
                 "noise_lowpass_prob": 0.2, "noise_highpass_prob": 0.2, "channel_lowpass_prob": 0.1,
                 "channel_highpass_prob": 0.1, "lowpass_hz": [2000, 7000], "highpass_hz": [50, 300],
                 "loader_threads": 2, "queue": 8},
        "validation": {"fraction": 0.05, "every": 500, "mixtures": 32, "seconds": 4.0, "seed": 1, "stoi": True,
                       "pairs": [{"noisy": "pairs/noisy", "clean": "pairs/clean"}]},
        "output": {"dir": "runs/denoiser", "log_every": 20, "checkpoint_every": 1000, "keep_checkpoints": 3,
                   "plot": True},
    }
    put("train_config", "full.json", json.dumps(base, indent=2))
    put("train_config", "minimal.json", json.dumps({"model": {}, "data": {"speech": "speech", "noise": ["noise"]}}))
    put("train_config", "pairs_only.json", json.dumps({
        "model": {"d_model": 16, "n_layers": 1},
        "data": {"pairs": [{"noisy": "n", "clean": "c"}], "noise_kinds": {"clip": 0, "white": 1}},
        "training": {"steps": 5, "batch": 1, "segment": 100}}))
    put("train_config", "unknown_key.json", '{"model": {}, "data": {"speech": "s", "snr": [0, 1]}}')


def graphite():
    # Tail: whole-stream line limit 4096 or a small one, then the cuts.
    def tail(small_limit=None, cuts=()):
        v = [(1, 0), (1, small_limit - 16)] if small_limit else [(1, 1)]
        return fdp_tail(v + [(1, len(cuts))] + [(2, c) for c in cuts])

    good = ("servers.web-1.cpu 12.5 1700000000\n"
            "servers.web-1.mem\t-3e2\t1700000060.75\r\n"
            "  a:b_c.d-e   +0.125   0  \n"
            "\n"
            "x 1e-400 253402300799\n")
    put("graphite", "good", good.encode() + tail(cuts=(5, 40, 41, 90)))
    bad = ("one_field\n"
           "a b c d\n"
           "bad..path 1 2\n"
           ".lead 1 2\n"
           "p notanumber 1\n"
           "p nan 1\n"
           "p 1e999 1\n"
           "p 1 -5\n"
           "p 1 1e9\n"
           "p 1 253402300800\n"
           "p\x001 2 3\n"
           "p 1 2\rx\n"
           "partial 1 2")
    put("graphite", "every_error", bad.encode() + tail(cuts=(3, 17, 60)))
    put("graphite", "too_long", ("x" * 70 + " 1 2\nshort.ok 1 2\n" + "y" * 40 + "\n").encode()
        + tail(small_limit=32, cuts=(10, 20, 71, 75)))
    put("graphite", "binary", bytes(range(256)) + tail(small_limit=64, cuts=(128,)))
    carbon = ("cpu.user;host=web-1;dc=eu 1 1700000000\n"
              "disk;path=/var/log;mode=a=b 2 1700000001\n"
              "collectd/host@example.com/if_octets.rx 3 1700000002\n"
              "caf\u00e9.\u6e29\u5ea6.\U0001f525 4 1700000003\n"
              "a.b 5 1.7e9\n"
              "a.b 6 1700000004.999\n"
              "a.b 7 -1\n"
              "a.b nan 1700000006\n"
              "a.b -NaN -1\n"
              "bad;tag 1 2\n"
              "bad;t=~x 1 2\n"
              "bad;=v 1 2\n"
              "a.b 1 3e11\n")
    put("graphite", "carbon_collectd", carbon.encode() + tail(cuts=(12, 13, 70, 150)))
    put("graphite", "utf8_edges", b"a\xc3 1 2\na\xc0\xaf 1 2\na\xed\xa0\x80 1 2\na\xf4\x90\x80\x80 1 2\n"
        b"\xe2\x82\xac.ok 1 2\n" + tail(small_limit=32, cuts=(1, 2, 3)))


def pcm_framing():
    def tail(s16, channels, reads, cuts):
        v = [(1, 1 if s16 else 0), (1, channels - 1), (1, len(reads) - 1)] + [(1, r) for r in reads]
        return fdp_tail(v + [(1, len(cuts))] + [(2, c) for c in cuts])

    import math
    s16 = b"".join(struct.pack("<h", int(8000 * math.sin(0.3 * i))) for i in range(48))
    f32 = b"".join(struct.pack("<f", math.sin(0.2 * i)) for i in range(24))
    put("pcm_framing", "s16_mono", s16 + tail(True, 1, [7, 1, 16], [3, 50, 51]))
    put("pcm_framing", "s16_stereo_partial", s16 + b"\x01" + tail(True, 2, [5, 40], [1, 2, 33]))
    put("pcm_framing", "f32_three_channels", f32 + tail(False, 3, [1, 2, 3], [12, 13, 14, 90]))
    put("pcm_framing", "f32_zero_reads", f32[:40] + b"\x7f\x80\x00" + tail(False, 1, [0, 4, 0], [6]))


def audio_file():
    if not shutil.which("sox"):
        print("make_corpus: no sox; audio_file seeds kept as they are")
        return
    d = os.path.join(CORPUS, "audio_file")
    os.makedirs(d, exist_ok=True)
    # A few milliseconds each: the formats libsndfile reads, each a way into its parsers.
    jobs = [("s16_mono.wav", ["-b", "16", "-c", "1"]), ("f32_stereo.wav", ["-e", "floating-point", "-b", "32", "-c", "2"]),
            ("u8.wav", ["-b", "8", "-c", "1"]), ("alaw.wav", ["-e", "a-law", "-c", "1"]),
            ("s24.aiff", ["-b", "24", "-c", "1"]), ("s16.aifc", ["-b", "16", "-c", "2"]),
            ("mulaw.au", ["-e", "mu-law", "-c", "1"]), ("f32.w64", ["-e", "floating-point", "-b", "32", "-c", "1"]),
            ("s16.flac", ["-b", "16", "-c", "1"]), ("vorbis.ogg", ["-c", "1"]), ("s16.voc", ["-b", "16", "-c", "1"]),
            ("s16.sf", ["-b", "16", "-c", "1"]), ("s16.sph", ["-b", "16", "-c", "1"]),
            ("s8.8svx", ["-b", "8", "-c", "1"]), ("s16.mat5", ["-b", "16", "-c", "1"]),
            ("s16.avr", ["-b", "16", "-c", "1"]), ("s16.htk", ["-b", "16", "-c", "1"]),
            ("s16.xi", ["-b", "16", "-c", "1"]), ("s16.sds", ["-b", "16", "-c", "1"])]
    for name, opts in jobs:
        subprocess.run(["sox", "-n", "-r", "8000"] + opts + [os.path.join(d, name), "synth", "0.004", "sine", "440"],
                       check=True)


def timeseries_csv():
    # The last byte picks the mode: 0 strict + lenient, 2 a single number /
    # timestamp, 3 the "anomaly_score" column.
    rows = "".join(f"2014-04-01 00:{5 * i:02d}:00,{20 + (i % 3) * 0.5}\n" for i in range(8))
    put("timeseries_csv", "nab.csv", "timestamp,value\n" + rows + "\x00")
    put("timeseries_csv", "results.csv",
        "timestamp,value,anomaly_score,label\n2014-04-01T00:00:00Z,1.5,0.25,0\r\n"
        "2014-04-01T00:05:00.000,2,0.5,1\r\n\r\n\x03")
    put("timeseries_csv", "epochs_bom_quotes.csv",
        "\ufeff\"value\" , \"timestamp\"\n+1e3,1396310400\n-0.0,1396310400\n7,1396310100\n\n\n\x00")
    put("timeseries_csv", "bad_rows.csv",
        "timestamp,value\n2014-02-29 00:00:00,1\n2014-04-01 24:00:00,2\n0001-01-01 00:00:00,nan\n\n"
        "2014-04-01 00:00:00,1,2\n9999-12-31 23:59:59,1e-400\n\x00")
    put("timeseries_csv", "number", "-1.25e-3\x02")
    put("timeseries_csv", "timestamp", "2016-02-29T23:59:59.000Z\x02")


def nab_labels():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "samples", "nab", "labels.json"), "rb") as f:
        put("nab_labels", "samples_labels.json", f.read())
    put("nab_labels", "empty_lists.json", '{"a/b.csv": [], "c.csv": []}')
    put("nab_labels", "touching.json", json.dumps({"x.csv": [["2015-01-01 00:00:00", "2015-01-01 01:00:00"],
                                                             ["2015-01-01 01:00:00", "1420078000"]]}))
    put("nab_labels", "fractions.json", json.dumps({"y.csv": [["2015-01-01 00:00:00.5", "2015-01-01 00:00:01.000000"]]}))


def detector_state():
    if len(sys.argv) < 2:
        print("make_corpus: no seed_detector_state program given; detector_state seeds kept as they are")
        return
    d = os.path.join(CORPUS, "detector_state")
    os.makedirs(d, exist_ok=True)
    subprocess.run([sys.argv[1], d], check=True)


def dictionary(name, about, words):
    """Writes NAME.dict: one quoted entry a line, bytes outside printable ASCII as hex escapes."""
    def quoted(w):
        out = ""
        for b in w.encode("latin-1"):
            c = chr(b)
            out += "\\\\" if c == "\\" else '\\"' if c == '"' else c if 0x20 <= b < 0x7F else "\\x%02X" % b
        return '"' + out + '"'
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, name + ".dict"), "w") as f:
        f.write("# libFuzzer dictionary: " + about + " (written by make_corpus.py)\n")
        f.writelines(quoted(w) + "\n" for w in words)


JSON_WORDS = ["{", "}", "[", "]", ":", ",", "true", "false", "null", "-1", "0", "1", "2147483647", "2147483648",
              "-2147483649", "9223372036854775807", "18446744073709551615", "18446744073709551616", "1e308",
              "1e400", "-1e400", "1e-400", "4.9e-324", "0.5", "-0.0", "\\u0000", '""']
MODEL_KEYS = ["block", "d_model", "n_layers", "expand", "head_dim", "d_state", "d_conv", "n_groups", "dt_rank",
              "chunk", "in_channels", "out_channels", "sample_rate", "lookahead", "dt_min", "dt_max",
              "dt_init_floor", "norm_eps"]
TRAIN_KEYS = ["model", "training", "data", "validation", "output", "steps", "batch", "segment", "lr", "min_lr",
              "warmup", "weight_decay", "clip", "l1_weight", "l2_weight", "stft_weight", "sisdr_weight", "seed",
              "threads", "speech", "noise", "pairs", "noisy", "clean", "pair_fraction", "snr_db", "level_dbfs",
              "max_peak", "noise_kinds", "white", "pink", "brown", "hum", "fan", "babble", "noise_lowpass_prob",
              "noise_highpass_prob", "channel_lowpass_prob", "channel_highpass_prob", "lowpass_hz", "highpass_hz",
              "loader_threads", "queue", "fraction", "every", "mixtures", "seconds", "stoi", "dir", "log_every",
              "checkpoint_every", "keep_checkpoints", "plot"]


def dictionaries():
    dictionary("model_config", "the keys and values of a model config",
               ['"%s":' % k for k in MODEL_KEYS] + ['"mamba2"', '"mamba1"', "65536", "65535", "1024", "4096", "64"]
               + JSON_WORDS)
    dictionary("train_config", "the keys and values of a training config and its model section",
               ['"%s":' % k for k in TRAIN_KEYS + MODEL_KEYS]
               + ['"mamba2"', '"mamba1"', "[-5, 20]", "[0, 1]", '[{"noisy":"n","clean":"c"}]', "600", "601", "256",
                  "1024", "8000"] + JSON_WORDS)
    dictionary("graphite", "pieces of Graphite plaintext lines",
               [" ", "\t", "\n", "\r\n", "\r", ".", "..", "servers.web-1.cpu", "a:b_c-d", " 12.5 ", " -3e2 ", "+",
                "1e-400", "1e999", "nan", "inf", "-inf", "0x10", "1700000000", "1700000000.25", "253402300799",
                "253402300800", "9223372036854775807", "99999999999999999999", "-1", "\x00", "\x7f", "\xff"])
    dictionary("timeseries_csv", "pieces of NAB time-series CSV files",
               ["timestamp", "value", "anomaly_score", "label", "timestamp,value\n", ",", '"', "\n", "\r\n",
                "\xef\xbb\xbf", "2014-04-01 00:00:00", "2014-04-01T00:00:00Z", ".000000", ".5", "1396310400",
                "-62135596800", "253402300799", "253402300800", "0001-01-01 00:00:00", "9999-12-31 23:59:59",
                "2016-02-29", "2015-02-29", "24:00:00", "23:59:60", "1e308", "1e309", "1e-400", "-0", "+", "nan",
                "inf", "0x1p3", "   "])
    dictionary("nab_labels", "pieces of NAB's labels.json",
               ['{"x.csv": [["', '", "', '"]]}', "[[", "]]", '"2014-04-01 00:00:00.000000"', '"1396310400"',
                '"0001-01-01 00:00:00"', '"9999-12-31 23:59:59.5"', '"2016-02-29 12:00:00"'] + JSON_WORDS)


if __name__ == "__main__":
    dictionaries()
    safetensors()
    model_config()
    train_config()
    graphite()
    pcm_framing()
    audio_file()
    timeseries_csv()
    nab_labels()
    detector_state()
