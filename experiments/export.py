"""``export``: a milestone checkpoint -> a folder that plain transformers loads, with a model card.

The arm writes its own parts (``Arm.export_pretrained``: the VLM's LM as a ``LlamaForCausalLM``
folder and its projector; the JEPA predictor as a ``LlamaModel`` folder, its visual map and heads,
and the target-space encoder when it is not a published model); this command adds ``export.json``
(what each part is, the frozen encoder to pair them with, the prompt), the run's ``config.yaml``
and ``README.md``, a model card with the run's config, samples seen and, when the comparison
evaluated this milestone, its metrics. The folder is built aside and swapped in whole.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from shared.config import Config, ConfigError, to_dict
from shared.evaluation.metrics import METRICS
from shared.data.report import metric_clips
from shared.data.report_sources import card_lines
from shared.files import read_json, read_jsonl, swap_in, write_json_atomic, write_text_atomic
from shared.milestone import Milestone, load_arm
from shared.precision import recorded, resolve_runtime
from shared.runinfo import versions
from shared.tables import markdown_table

log = logging.getLogger(__name__)


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("export", help=help, description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a milestone folder (runs/<arm>/seed<k>/checkpoints/samples_<N>) or a run folder (its last)")
    p.add_argument("--out", required=True, type=Path, dest="export_dir", help="the folder to write (replaced whole)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="changes to the run's config that do not touch the weights, e.g. cache_dir=/elsewhere")
    p.set_defaults(run=run)


def encoder_card(cfg: Config) -> dict:
    """The frozen X-encoder the exported parts expect their visual tokens from."""
    e = cfg.encoder
    return {"timm_model": e.model, "weights": e.weights or f"seeded random init (encoder.init_seed={e.init_seed})",
            "image_size": e.image_size, "frames": cfg.data.frames, "pool_grid": e.pool_grid,
            "tokens": "per frame, frames in order; average-pooled to pool_grid x pool_grid per frame (0 = all)"}


def comparison_folder(m: Milestone) -> Path | None:
    """The sample-efficiency folder the milestone's run belongs to (DIR/runs/<arm>/seed<k>), if any."""
    if m.run is None or m.run.root.parent.parent.name != "runs":
        return None
    return m.run.root.parents[2]


def evaluated_metrics(m: Milestone, seed: int) -> dict | None:
    """This milestone's row of its comparison's metrics.jsonl, when it has one."""
    folder = comparison_folder(m)
    if folder is None:
        return None
    rows = read_jsonl(folder / "metrics.jsonl")
    return next((r for r in rows if r.get("arm") == m.arm_name and r.get("seed") == seed
                 and r.get("samples_seen") == m.samples_seen), None)


def trained_data(m: Milestone) -> dict:
    """What data the comparison ran on (its summary.json's "data"); empty for a run outside one."""
    folder = comparison_folder(m)
    summary = folder / "summary.json" if folder else None
    return (read_json(summary).get("data") or {}) if summary and summary.is_file() else {}


def model_card(m: Milestone, cfg: Config, info: dict, metrics: dict | None, data: dict | None = None) -> str:
    parts = "\n".join(f"- `{name}`: {what}" for name, what in info["parts"].items())
    if metrics:
        rows = [(x.label, f"{100 * metrics[x.key]:.1f}" if x.percent else f"{metrics[x.key]:.3f}",
                 f"{n:,}" if (n := metric_clips(x.key, data or {})) is not None else "–")
                for x in METRICS if metrics.get(x.key) is not None]
        scores = ("Evaluated by the suite at this milestone (its `metrics.jsonl`), on the clips counted:\n\n"
                  + "\n".join(markdown_table(["metric", "value", "clips"], rows)))
    else:
        scores = "This milestone was not evaluated in a comparison folder: no metrics."
    data_text = "\n\n".join(card_lines(data or {}, to_dict(cfg)))
    return f"""---
library_name: transformers
tags: [jepa-vs-vlm, video-language, {m.arm_name}]
---

# {m.arm_name}, seed {cfg.seed}, {m.samples_seen:,} samples seen

An arm of the controlled comparison "embedding prediction (VL-JEPA) vs token prediction (VLM)",
trained by the jepa-vs-vlm suite and exported from `{m.folder}`.
It reads visual tokens of the frozen encoder below, not pixels: encode frames with it first.

## Parts

{parts}

`export.json` records how the parts fit together; docs/export.md of the suite reloads them with
plain transformers.

## Frozen encoder

```json
{json.dumps(encoder_card(cfg), indent=2)}
```

Prompt: `{cfg.data.query}`

## Data

{data_text}

## Results

{scores}

## Training

{m.samples_seen:,} samples seen ({m.state.get('step')} optimizer steps, effective batch {cfg.train.effective_batch},
lr {cfg.train.lr}, schedule {cfg.train.schedule}, precision {recorded(to_dict(cfg))}). The run's resolved
config is in `config.yaml` beside this card.
"""


def export(checkpoint: Path, out: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    m = Milestone.find(checkpoint)
    cfg = m.config(overrides)
    arm = load_arm(m, device="cpu", overrides=overrides, evaluation=False, runtime=resolve_runtime(cfg, "cpu"))
    if not arm.has("export"):
        raise ConfigError(f"{m.folder}: arm {m.arm_name!r} has no Hugging Face export (Arm.export_pretrained)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = arm.export_pretrained(tmp)
    shutil.copy(m.config_path, tmp / "config.yaml")
    metrics = evaluated_metrics(m, cfg.seed)
    manifest = {"arm": m.arm_name, "base_arm": cfg.base_arm(m.arm_name), "seed": cfg.seed,
                "samples_seen": m.samples_seen, "step": m.state.get("step"), "checkpoint": str(m.folder.resolve()),
                "encoder": encoder_card(cfg), "query": cfg.data.query, "parts": info["parts"], **info["config"],
                "metrics": metrics, "versions": versions()}
    write_json_atomic(tmp / "export.json", manifest)
    write_text_atomic(tmp / "README.md", model_card(m, cfg, info, metrics, trained_data(m)))
    out.parent.mkdir(parents=True, exist_ok=True)
    swap_in(tmp, out)
    return manifest


def run(args: argparse.Namespace) -> int:
    manifest = export(args.checkpoint, args.export_dir, args.overrides)
    log.info("exported %s at %s samples into %s: %s", manifest["arm"], f"{manifest['samples_seen']:,}", args.export_dir,
             ", ".join(manifest["parts"]))
    return 0
