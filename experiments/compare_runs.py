"""``compare-runs``: do two output folders hold the same results?

For a determinism check (the same seed and config twice), a code change that should change
nothing (a refactor), or the same run on another machine. Compared, file by file under both
folders: every JSONL of results (``metrics.jsonl`` rows matched by arm, seed, milestone and grid
cell; training logs; predictions; sweep and selective-decoding rows), ``baselines.json``, data
orders, checkpoint states, the control audit, and every milestone's weights tensor by tensor.
Not compared: timings (keys ending in ``_s``, rates per second), paths, package versions. The
resolved configs' differences are listed first: a different config explains different results.

What "the same" can mean depends on the device the runs trained on, read from their records
(precision.json: the device, its name, the resolved precision, ``train.deterministic``): on a CPU,
and on CUDA with ``train.deterministic=true``, reruns are bit-identical, so the default tolerance
is 0; on CUDA with ``train.deterministic=false`` (TF32, atomics in backward kernels) or between
different devices, small differences are expected and numbers are compared within
``NONDETERMINISTIC_ATOL`` unless ``--atol`` says otherwise. The first line printed says which.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file

from shared.config import flatten
from shared.files import read_json, read_jsonl

JSON_FILES = ("baselines.json", "data_order.json", "control_audit.json", "train_state.json")
PATH_KEYS = {"runs", "path", "run_dir", "out"}  # where a run lives, not what it computed
ROW_IDENTITY = ("arm", "seed", "milestone", "cell", "stream", "rate", "method")
# absolute tolerance where reruns are not bit-identical (CUDA without train.deterministic, or two devices):
# rounding-level gaps of a short run (a few hundred steps: losses, bf16 weights, a clip or two of top-5 over
# ~500 clips). Long non-deterministic runs part further, towards the spread between seeds: compare those
# with the report's seed intervals, or rerun with train.deterministic=true for an identity check.
NONDETERMINISTIC_ATOL = 1e-2


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("compare-runs", help=help,
                       description=__doc__.split("\n\n")[1] + " Exit status 0 when everything compared is equal "
                                   "(within --atol), 1 when something differs or is missing on one side.")
    p.add_argument("a", type=Path, help="an output folder (sample-efficiency, train, selective-decoding)")
    p.add_argument("b", type=Path, help="the folder to compare it with")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance on numbers and weights (default: 0 where the runs' device promises "
                        f"bit-identical reruns: CPU, or CUDA with train.deterministic=true; {NONDETERMINISTIC_ATOL:g} "
                        "on CUDA with train.deterministic=false or across devices)")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="a key to leave out wherever it appears (e.g. a config key one side no longer has); repeatable")
    p.add_argument("--show", type=int, default=20, help="differences printed (default 20)")
    p.set_defaults(run=run)


def is_timing(key: str) -> bool:
    return key.endswith(("_s", "_ms"))  # seconds, rates per second (samples_per_s), milliseconds


def differences(a: Any, b: Any, atol: float, ignore: set[str], where: str = "") -> list[str]:
    """Every place where ``a`` and ``b`` differ (numbers within ``atol``), timings and paths left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k in ignore or k in PATH_KEYS or is_timing(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'b' if k not in a else 'a'}")
            else:
                out += differences(a[k], b[k], atol, ignore, f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, atol, ignore, f"{where}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol
        return [] if same else [f"{where}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def keyed_rows(path: Path) -> dict[str, dict]:
    """A JSONL file's rows by their identity fields (by line number where they have none)."""
    rows = read_jsonl(path)
    keys = [yaml.safe_dump({k: row[k] for k in ROW_IDENTITY if k in row}, default_flow_style=True).strip()
            for row in rows]
    if len(set(keys)) < len(keys):  # no identity fields, or not enough to tell rows apart
        keys = [f"line {i + 1}" for i in range(len(rows))]
    return dict(zip(keys, rows))


def weight_differences(a: Path, b: Path, atol: float) -> list[str]:
    wa, wb = load_file(str(a)), load_file(str(b))
    if set(wa) != set(wb):
        return [f": tensors {sorted(set(wa) ^ set(wb))[:4]} only on one side"]
    out = []
    for name in sorted(wa):
        x, y = wa[name], wb[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            out.append(f"[{name}]: {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}")
        elif x.numel():
            gap = (x.float() - y.float()).abs().max().item()
            if not gap <= atol:  # NaN counts as a difference
                out.append(f"[{name}]: max |a-b| = {gap:.3g}")
    return out


def result_files(root: Path) -> dict[str, Path]:
    files = [*root.rglob("*.jsonl"), *(p for name in JSON_FILES for p in root.rglob(name)),
             *root.rglob("checkpoints/*/*.safetensors")]
    return {str(p.relative_to(root)): p for p in files if "resume" not in p.relative_to(root).parts}


def config_differences(a: Path, b: Path, ignore: set[str]) -> list[str]:
    fa, fb = a / "config.yaml", b / "config.yaml"
    if not (fa.is_file() and fb.is_file()):
        return []
    ca, cb = (flatten(yaml.safe_load(f.read_text()) or {}) for f in (fa, fb))
    return [f"{k}: {ca.get(k, '<absent>')!r} vs {cb.get(k, '<absent>')!r}" for k in sorted(set(ca) | set(cb))
            if k not in ignore and k != "cache_dir" and ca.get(k, "<absent>") != cb.get(k, "<absent>")]


def compare(a: Path, b: Path, atol: float = 0.0, ignore: tuple[str, ...] = ()) -> tuple[dict[str, int], list[str]]:
    """(items compared per kind of file, differences) between output folders ``a`` and ``b``."""
    ignore_set = set(ignore)
    fa, fb = result_files(a), result_files(b)
    diffs = [f"{name}: only in {'a' if name in fa else 'b'}" for name in sorted(set(fa) ^ set(fb))]
    counts: dict[str, int] = {}
    for name in sorted(set(fa) & set(fb)):
        kind = Path(name).name if not name.endswith(".safetensors") else "weights"
        kind = "predictions" if "predictions" in Path(name).parts else kind
        if name.endswith(".jsonl"):
            ra, rb = keyed_rows(fa[name]), keyed_rows(fb[name])
            found = differences(ra, rb, atol, ignore_set)
            n = len(ra)
        elif name.endswith(".json"):
            found = differences(read_json(fa[name]), read_json(fb[name]), atol, ignore_set)
            n = 1
        else:
            found = weight_differences(fa[name], fb[name], atol)
            n = 1
        counts[kind] = counts.get(kind, 0) + n
        diffs += [f"{name}{d}" for d in found]
    return counts, diffs


def devices(root: Path) -> set[tuple[str, str, bool]]:
    """(device type, device name, deterministic) of every run under ``root``, from its precision.json (the
    loop records ``train.deterministic`` as applied; runs made before that trained without it)."""
    out = set()
    for path in root.rglob("precision.json"):
        info = read_json(path)
        hw = info.get("hardware") or {}
        kind = hw.get("device", "cpu")
        name = (hw.get("cuda_name") if kind == "cuda" else hw.get("cpu")) or "unknown"
        out.add((kind, name, bool((info.get("determinism") or {}).get("deterministic", False))))
    return out


def promise(a: Path, b: Path) -> tuple[str, float]:
    """What two output folders' runs can be expected to share, and the default tolerance that follows."""
    found = devices(a) | devices(b)
    if not found:
        return "no precision.json in either folder: the device is unknown; compared exactly", 0.0
    kinds = {(kind, name) for kind, name, _ in found}
    if len(kinds) > 1:
        return ("runs on different devices (" + " vs ".join(f"{k} {n}" for k, n in sorted(kinds)) + "): rounding "
                f"differences expected, compared with tolerance {NONDETERMINISTIC_ATOL:g}"), NONDETERMINISTIC_ATOL
    (kind, name), = kinds
    if kind != "cuda":
        return f"CPU ({name}): bit-identical expected", 0.0
    if all(det for _, _, det in found):
        return f"CUDA ({name}) with train.deterministic=true: bit-identical expected", 0.0
    return (f"CUDA ({name}) with train.deterministic=false: small differences expected (TF32, atomics in backward "
            f"kernels), compared with tolerance {NONDETERMINISTIC_ATOL:g}; they grow with the steps: "
            "train.deterministic=true for an identity check"), NONDETERMINISTIC_ATOL


def run(args: argparse.Namespace) -> int:
    for folder in (args.a, args.b):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such output folder")
    expected, default_atol = promise(args.a, args.b)
    args.atol = default_atol if args.atol is None else args.atol
    print(f"device: {expected}" + (f" (--atol {args.atol:g} given)" if args.atol != default_atol else ""))
    config = config_differences(args.a, args.b, set(args.ignore))
    print(f"configs: {'identical' if not config else f'{len(config)} keys differ'}")
    for line in config[:args.show]:
        print(f"  {line}")
    counts, diffs = compare(args.a, args.b, args.atol, tuple(args.ignore))
    print("compared: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    print(f"results: {'identical' if not diffs else f'{len(diffs)} differences'}"
          + (f" (atol {args.atol:g})" if args.atol else "") + (f"; ignored keys: {', '.join(args.ignore)}" if args.ignore else ""))
    for line in diffs[:args.show]:
        print(f"  {line}")
    return 1 if diffs or not counts else 0
