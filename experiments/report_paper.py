"""The report's section on the paper's own numbers (VL-JEPA, section 4.4) and why ours are on another scale."""
from __future__ import annotations

from shared.report_sections import RunFiles
from shared.tables import fmt as _fmt, markdown_table

# The paper's section 4.4 (Figure 3), for reference only: other data, models and scale.
PAPER = [
    {"samples": "0.5M", "jepa_cider": 1.23, "vlm_cider": 1.35, "jepa_top5": 14.9, "vlm_top5": 14.0},
    {"samples": "5M", "jepa_cider": 14.7, "vlm_cider": None, "jepa_top5": 35.3, "vlm_top5": None},
    {"samples": "15M", "jepa_cider": 14.8, "vlm_cider": 7.1, "jepa_top5": 41.0, "vlm_top5": 27.2},
]


def paper_lines(run: RunFiles, sections: dict) -> list[str]:
    """The paper's section 4.4 numbers and why ours are on another scale."""
    lines: list[str] = []
    lines += ["", "## The paper's numbers, for reference", "",
          "Section 4.4 of VL-JEPA (Figure 3): PE-Core ViT-L/14 frozen, Llama-3.2-1B, real video-text data, CIDEr averaged "
          "over YouCook2 / MSR-VTT / PVD-Bench and top-5 over CrossTask-Step / CrossTask-Task / EgoExo4D. Its CIDEr "
          "values are on the common x100 scale (14.8 there is 0.148 on the scale used here). Both arms start from "
          "pretrained text knowledge (Llama-3.2-1B; the JEPA target space is SONAR). The shape: about level at 0.5M "
          "samples (CIDEr 1.23 vs 1.35, top-5 14.9 vs 14.0), then the JEPA arm pulls ahead on both metrics and stays "
          "ahead to 15M.", "",
          *markdown_table(["samples seen", "JEPA CIDEr", "VLM CIDEr", "JEPA top-5 %", "VLM top-5 %"],
                          [(p["samples"], _fmt(p["jepa_cider"], nd=2), _fmt(p["vlm_cider"], nd=2), _fmt(p["jepa_top5"], nd=1),
                            _fmt(p["vlm_top5"], nd=1)) for p in PAPER])]
    encoder = "a random frozen encoder" if not run.cfg["encoder"]["weights"] else f"the frozen `{run.cfg['encoder']['model']}`"
    lines += ["", " ".join(["Our numbers are not on the paper's scale: small models (with the text knowledge the "
          f"controls above name), {encoder} and up to {max(run.milestones):,} samples (the paper: 0.5M–15M).",
          *sections["scale"], "What carries over is the protocol, not the absolute values; where our ranking of the "
          "arms differs from the paper's, the tables above are what we measured."]), ""]
    return lines
