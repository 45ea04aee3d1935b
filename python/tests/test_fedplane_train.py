"""Tests of fedplane_train: python3 -m unittest discover -s python/tests (make test-python)."""

import ast
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))  # the source, installed or not

import fedplane_train as ft  # noqa: E402

#: Written by fedplane's Go writer: go run python/tests/testdata/gen_golden.go.
GOLDEN = os.path.join(HERE, "testdata", "golden.safetensors")

#: What gen_golden.go puts in GOLDEN, as read back (BF16 as float32).
GOLDEN_TENSORS = {
    "bf16": np.array([1, -2, 3.140625], dtype=np.float32),
    "bytes": np.array([[0, 128, 255]], dtype=np.uint8),
    "count": np.array(7, dtype=np.int32),
    "dense.weight": np.array([[1, -2.5, 3], [0.125, 1e-3, 1e30]], dtype=np.float32),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "f16": np.array([[1, -2], [0.5, 65504]], dtype=np.float16),
    "f64": np.array([math.pi, -1e-300], dtype=np.float64),
    "mask": np.array([True, False, True]),
    "step": np.array([-1, 2**63 - 1], dtype=np.int64),
    "ünïcode": np.array([-128, 127], dtype=np.int8),
}
GOLDEN_METADATA = {"format": "pt", "source": "gen_golden.go"}


def safetensors_bytes(header, data=b"", pad=True):
    """A safetensors file with header (a dict, or raw bytes) and data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


class Temp(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def put(self, name, blob):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(blob)
        return p


class GoldenTest(Temp):
    """Files of fedplane's Go writer, read and reproduced byte for byte."""

    def test_read(self):
        tensors, meta = ft.read_safetensors(GOLDEN, metadata=True)
        self.assertEqual(meta, GOLDEN_METADATA)
        self.assertEqual(sorted(tensors), sorted(GOLDEN_TENSORS))
        for name, want in GOLDEN_TENSORS.items():
            with self.subTest(tensor=name):
                got = tensors[name]
                self.assertEqual(got.dtype, want.dtype)
                self.assertEqual(got.shape, want.shape)
                np.testing.assert_array_equal(got, want)
                self.assertTrue(got.flags.writeable and got.flags.c_contiguous)

    def test_write_matches_go(self):
        out = self.path("out.safetensors")
        ft.write_safetensors(out, GOLDEN_TENSORS, metadata=GOLDEN_METADATA, dtypes={"bf16": "BF16"})
        with open(out, "rb") as f, open(GOLDEN, "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_round_trip(self):
        out = self.path("rt.safetensors")
        model = ft.read_safetensors(GOLDEN)
        ft.write_safetensors(out, model, like=model, dtypes={"bf16": "BF16"})
        again = ft.read_safetensors(out)
        for name in model:
            np.testing.assert_array_equal(again[name], model[name])


class LayoutTest(Temp):
    """The bytes write_safetensors produces, as tensor/safetensors.go reads them."""

    def test_header_and_alignment(self):
        for names in (["a"], ["a", "bb"], ["w" * 13, "b"], ["x" * n for n in range(1, 9)]):
            with self.subTest(names=names):
                out = self.path("m.safetensors")
                tensors = {n: np.arange(i + 1, dtype=np.float32) for i, n in enumerate(sorted(set(names)))}
                ft.write_safetensors(out, tensors)
                with open(out, "rb") as f:
                    blob = f.read()
                (n,) = struct.unpack("<Q", blob[:8])
                self.assertEqual(n % 8, 0, "header not padded to 8 bytes")
                text = blob[8 : 8 + n].decode()
                self.assertEqual(text, text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))))
                self.assertTrue(text.startswith("{"))
                header = json.loads(text)
                self.assertEqual(list(header), sorted(header))
                off = 0
                for name in sorted(tensors):
                    e = header[name]
                    self.assertEqual(list(e), ["dtype", "shape", "data_offsets"])
                    self.assertEqual(e["dtype"], "F32")
                    self.assertEqual(e["shape"], [tensors[name].size])
                    self.assertEqual(e["data_offsets"], [off, off + 4 * tensors[name].size])
                    data = blob[8 + n + off : 8 + n + e["data_offsets"][1]]
                    np.testing.assert_array_equal(np.frombuffer(data, "<f4"), tensors[name])
                    off = e["data_offsets"][1]
                self.assertEqual(len(blob), 8 + n + off)

    def test_scalar_shape_is_empty_list(self):
        out = self.path("s.safetensors")
        ft.write_safetensors(out, {"s": np.float32(2.5)})
        with open(out, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        self.assertEqual(json.loads(blob[8 : 8 + n])["s"]["shape"], [])
        self.assertEqual(ft.read_safetensors(out)["s"].shape, ())

    def test_dtypes(self):
        cases = {
            "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
            "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
        }
        for dtype, np_type in cases.items():
            with self.subTest(dtype=dtype):
                out = self.path("d.safetensors")
                a = np.array([[1, 0], [1, 1]], dtype=np_type)
                ft.write_safetensors(out, {"t": a})
                with open(out, "rb") as f:
                    blob = f.read()
                (n,) = struct.unpack("<Q", blob[:8])
                self.assertEqual(json.loads(blob[8 : 8 + n])["t"]["dtype"], dtype)
                np.testing.assert_array_equal(ft.read_safetensors(out)["t"], a)

    def test_big_endian_array_written_little_endian(self):
        out = self.path("be.safetensors")
        ft.write_safetensors(out, {"t": np.array([1.5, -3], dtype=">f4")})
        with open(out, "rb") as f:
            self.assertEqual(f.read()[-8:], struct.pack("<2f", 1.5, -3))

    def test_bf16_rounding(self):
        cases = [
            (1.0, 1.0),
            (1.00390625, 1.0),  # halfway, even stays
            (1.01171875, 1.015625),  # halfway, odd rounds up to even
            (1.01, 1.0078125),
            (-3.3e38, -3.3e38),
        ]
        out = self.path("bf.safetensors")
        values = np.array([c[0] for c in cases], dtype=np.float32)
        ft.write_safetensors(out, {"t": values}, dtypes={"t": "BF16"})
        got = ft.read_safetensors(out)["t"]
        for (value, want), g in zip(cases, got):
            with self.subTest(value=value):
                if abs(want) < 1e38:
                    self.assertEqual(float(g), want)
                else:
                    self.assertAlmostEqual(float(g) / want, 1, places=2)

    def test_no_temp_file_left(self):
        out = self.path("m.safetensors")
        ft.write_safetensors(out, {"a": np.zeros(3, np.float32)})
        with self.assertRaises(ValueError):
            ft.write_safetensors(out, {"a": np.array([np.nan], np.float32)})
        self.assertEqual(os.listdir(self.tmp.name), ["m.safetensors"])


class ReadRefusalTest(Temp):
    """Files fedplane's reader refuses are refused here, with the reason."""

    def test_refusals(self):
        f32 = struct.pack("<2f", 1, 2)
        entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
        cases = [
            ("short", b"\x01\x00", "too short"),
            ("header past end", struct.pack("<Q", 99) + b"{}", "larger than the file"),
            ("not utf-8", safetensors_bytes(b'{"\xff":1}'), "not valid UTF-8"),
            ("not an object", safetensors_bytes(b"[]"), "not a JSON object"),
            ("bad json", safetensors_bytes(b'{"a":'), "header JSON"),
            ("duplicate", safetensors_bytes(b'{"a":%s,"a":%s}' % ((json.dumps(entry).encode(),) * 2), f32), "duplicate entry 'a'"),
            ("unknown dtype", safetensors_bytes({"a": dict(entry, dtype="C64")}, f32), "unknown dtype 'C64'"),
            ("no shape", safetensors_bytes({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, f32), "no shape"),
            ("negative dim", safetensors_bytes({"a": dict(entry, shape=[-2])}, f32), "shape"),
            ("size mismatch", safetensors_bytes({"a": dict(entry, shape=[3])}, f32), "needs 12"),
            ("past end", safetensors_bytes({"a": dict(entry, data_offsets=[0, 16], shape=[4])}, f32), "end beyond"),
            ("not a range", safetensors_bytes({"a": dict(entry, data_offsets=[8, 0])}, f32), "not a range"),
            ("overlap", safetensors_bytes({"a": entry, "b": dict(entry, shape=[1], data_offsets=[4, 8])}, f32), "overlap"),
            ("bad metadata", safetensors_bytes({"__metadata__": {"k": 1}}), "__metadata__"),
            ("empty name", safetensors_bytes({"": entry}, f32), "empty name"),
        ]
        for what, blob, want in cases:
            with self.subTest(what):
                p = self.put("bad.safetensors", blob)
                with self.assertRaises(ValueError) as cm:
                    ft.read_safetensors(p)
                self.assertIn(want, str(cm.exception))
                self.assertIn(p, str(cm.exception))

    def test_header_limit(self):
        blob = struct.pack("<Q", ft.MAX_HEADER_SIZE + 8) + b"{" + b" " * (ft.MAX_HEADER_SIZE + 7)
        with self.assertRaises(ValueError) as cm:
            ft.read_safetensors(self.put("big.safetensors", blob))
        self.assertIn("exceeds the limit", str(cm.exception))


class WriteRefusalTest(Temp):
    def test_refusals(self):
        model = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(1, np.float32)}
        cases = [
            ("nan", {"w": np.array([[0, 0], [0, np.nan]], np.float32)}, {}, "element [1, 1] is NaN"),
            ("-inf", {"w": np.array([-np.inf], np.float64)}, {}, "element [0] is -Inf"),
            ("+inf bf16", {"w": np.array([np.inf], np.float32)}, {"dtypes": {"w": "BF16"}}, "+Inf"),
            ("complex", {"w": np.zeros(2, np.complex64)}, {}, "no safetensors dtype"),
            ("uint32", {"w": np.zeros(2, np.uint32)}, {}, "no safetensors dtype"),
            ("reserved", {"__metadata__": np.zeros(1, np.float32)}, {}, "reserved"),
            ("empty name", {"": np.zeros(1, np.float32)}, {}, "non-empty"),
            ("bf16 of ints", {"w": np.zeros(2, np.int32)}, {"dtypes": {"w": "BF16"}}, "needs a float array"),
            ("dtype mismatch", {"w": np.zeros(2, np.int32)}, {"dtypes": {"w": "F32"}}, "convert it first"),
            ("dtypes names none", {"w": np.zeros(2, np.float32)}, {"dtypes": {"x": "F32"}}, "not a tensor"),
            ("metadata", {"w": np.zeros(2, np.float32)}, {"metadata": {"k": 1}}, "strings to strings"),
            ("missing", {"w": model["w"]}, {"like": model}, "tensor 'b' is missing"),
            ("extra", dict(model, x=np.zeros(1, np.float32)), {"like": model}, "unexpected tensor 'x'"),
            ("shape", dict(model, w=np.zeros((4,), np.float32)), {"like": model}, "shape [4] differs from the model's [2, 2]"),
            ("dtype", dict(model, w=np.zeros((2, 2), np.float64)), {"like": model}, "dtype float64, the model's is float32"),
        ]
        for what, tensors, kw, want in cases:
            with self.subTest(what):
                with self.assertRaises(ValueError) as cm:
                    ft.write_safetensors(self.path("out.safetensors"), tensors, **kw)
                self.assertIn(want, str(cm.exception))
                self.assertFalse(os.path.exists(self.path("out.safetensors")))

    def test_not_finite_allowed_when_asked(self):
        out = self.path("nan.safetensors")
        ft.write_safetensors(out, {"w": np.array([np.nan], np.float32)}, check_finite=False)
        self.assertTrue(np.isnan(ft.read_safetensors(out)["w"][0]))


class MetricsTest(Temp):
    def test_lines(self):
        p = self.path("metrics.jsonl")
        ft.write_metrics(p, {"accuracy": 0.75, "n_samples": 600})
        ft.write_metrics(p, [("loss", np.float32(0.5)), ("epochs", np.int64(3))])
        with open(p) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, [
            '{"name": "accuracy", "value": 0.75}',
            '{"name": "n_samples", "value": 600}',
            '{"name": "loss", "value": 0.5}',
            '{"name": "epochs", "value": 3}',
        ])
        self.assertEqual(ft.read_metrics(p), {"accuracy": 0.75, "n_samples": 600, "loss": 0.5, "epochs": 3})

    def test_refusals(self):
        cases = [
            ("nan", {"loss": float("nan")}, "not a finite number"),
            ("inf", {"loss": float("inf")}, "not a finite number"),
            ("too big", {"loss": 1e39}, "fits a float32"),
            ("bool", {"ok": True}, "not a number"),
            ("string", {"ok": "1"}, "not a number"),
            ("empty name", {"": 1}, "non-empty"),
            ("long name", {"x" * 1025: 1}, "at most 1024"),
            ("n_samples 0", {"n_samples": 0}, "whole number from 1"),
            ("n_samples fraction", {"n_samples": 1.5}, "whole number from 1"),
            ("n_samples big", {"n_samples": 2**31}, "whole number from 1"),
            ("repeat", [("a", 1), ("a", 2)], "already in"),
        ]
        for what, metrics, want in cases:
            with self.subTest(what):
                p = self.path("m.jsonl")
                with self.assertRaises(ValueError) as cm:
                    ft.write_metrics(p, metrics)
                self.assertIn(want, str(cm.exception))
                self.assertFalse(os.path.exists(p), "a refused metric wrote something")

    def test_repeat_across_calls(self):
        p = self.path("m.jsonl")
        ft.write_metrics(p, {"a": 1})
        with self.assertRaises(ValueError):
            ft.write_metrics(p, {"b": 2, "a": 3})
        self.assertEqual(ft.read_metrics(p), {"a": 1})


class RoundTest(unittest.TestCase):
    ENV = {
        "FEDPLANE_INPUT_MODEL": "/w/round-3/input.safetensors",
        "FEDPLANE_OUTPUT_MODEL": "/w/round-3/output.safetensors",
        "FEDPLANE_METRICS": "/w/round-3/metrics.jsonl",
        "FEDPLANE_DATA": "/data/shard",
        "FEDPLANE_ROUND": "3",
        "FEDPLANE_ENVOY": "site-a",
        "FEDPLANE_EXPERIMENT": "0f3c",
        "FEDPLANE_SAMPLES": "0",
    }

    def test_from_environ(self):
        r = ft.Round.from_environ(self.ENV)
        self.assertEqual(r, ft.Round("/w/round-3/input.safetensors", "/w/round-3/output.safetensors",
                                     "/w/round-3/metrics.jsonl", "/data/shard", 3, "site-a", "0f3c", 0))

    def test_refusals(self):
        cases = [
            ("FEDPLANE_DATA", None, "FEDPLANE_DATA is not set"),
            ("FEDPLANE_METRICS", "", "FEDPLANE_METRICS is not set"),
            ("FEDPLANE_ROUND", "x", "FEDPLANE_ROUND='x' is not a whole number"),
            ("FEDPLANE_SAMPLES", "-1", "negative"),
        ]
        for var, value, want in cases:
            with self.subTest(var=var, value=value):
                env = dict(self.ENV)
                if value is None:
                    del env[var]
                else:
                    env[var] = value
                with self.assertRaises(ValueError) as cm:
                    ft.Round.from_environ(env)
                self.assertIn(want, str(cm.exception))


DOC = os.path.join(HERE, "..", "..", "docs", "training.md")


def doc_blocks():
    """The ```python blocks of docs/training.md, the minimal trainer first."""
    with open(DOC) as f:
        text = f.read()
    start = text.index("<!-- minimal-trainer -->")
    blocks = text[start:].split("```python\n")[1:]
    return [b[: b.index("```")] for b in blocks]


class DocTrainerTest(Temp):
    """The trainers of docs/training.md run and produce what the envoy accepts."""

    def run_trainer(self, code, rows, d):
        """Run code as a round's training command in folder d; return the process and d's path()."""
        path = lambda name: os.path.join(d, name)  # noqa: E731
        os.makedirs(path("shard"))
        with open(path("shard/data.csv"), "w") as f:
            f.write("".join(",".join(str(v) for v in r) + "\n" for r in rows))
        ft.write_safetensors(path("input.safetensors"), {"mean": np.zeros(2, np.float32)})
        with open(path("train.py"), "w") as f:
            f.write(code)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.path.join(HERE, ".."),
            "FEDPLANE_INPUT_MODEL": path("input.safetensors"),
            "FEDPLANE_OUTPUT_MODEL": path("output.safetensors"),
            "FEDPLANE_METRICS": path("metrics.jsonl"),
            "FEDPLANE_DATA": path("shard"),
            "FEDPLANE_ROUND": "0",
            "FEDPLANE_ENVOY": "site-a",
            "FEDPLANE_EXPERIMENT": "doc",
            "FEDPLANE_SAMPLES": "0",
        }
        out = subprocess.run([sys.executable, path("train.py")], env=env, cwd=d, capture_output=True, text=True)
        return out, path

    def test_trainers(self):
        blocks = doc_blocks()
        self.assertEqual(len(blocks), 2)
        for i, code in enumerate(blocks):
            with self.subTest(block=i):
                out, path = self.run_trainer(code, [[1, 2], [3, 4], [5, 12]], self.path(str(i)))
                self.assertEqual(out.returncode, 0, out.stderr)
                model = ft.read_safetensors(path("output.safetensors"))
                ft.check_layout(model, ft.read_safetensors(path("input.safetensors")))
                np.testing.assert_allclose(model["mean"], [3, 6])
                m = ft.read_metrics(path("metrics.jsonl"))
                self.assertEqual(m["n_samples"], 3)
                self.assertAlmostEqual(m["distance"], math.hypot(3, 6), places=5)

    def test_minimal_trainer_says_why(self):
        out, path = self.run_trainer(doc_blocks()[0], [[1, 2, 3]], self.path("bad"))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("data.csv: want rows of 2 numbers", out.stderr)
        self.assertFalse(os.path.exists(path("output.safetensors")))


class OneFileTest(unittest.TestCase):
    """The helper is one file needing the standard library and numpy only."""

    def test_imports(self):
        with open(ft.__file__) as f:
            tree = ast.parse(f.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                self.assertEqual(node.level, 0, "relative import: the file would not work copied alone")
                names.add(node.module.split(".")[0])
        allowed = set(sys.stdlib_module_names) | {"numpy"}
        self.assertEqual(names - allowed, set())

    def test_copied_alone(self):
        with tempfile.TemporaryDirectory() as d:
            with open(ft.__file__) as src, open(os.path.join(d, "fedplane_train.py"), "w") as dst:
                dst.write(src.read())
            code = "import fedplane_train as f; print(sorted(f.read_safetensors(%r)))" % GOLDEN
            out = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True, check=True)
            self.assertEqual(out.stdout.strip(), str(sorted(GOLDEN_TENSORS)))


if __name__ == "__main__":
    unittest.main()
