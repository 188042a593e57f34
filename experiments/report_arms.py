"""Report sections of arms with wording of their own: an arm with a Y-decoder (the JEPA arm) says what
its decoder trained on, what it bounds and how large it is. Which arms have one is read from their
metrics rows, so any number of arms gets its lines (shared/report_sections.py)."""
from __future__ import annotations

import numpy as np

from shared.report_sections import ReportSections, RunFiles
from shared.tables import fmt


class YDecoderSections(ReportSections):
    def __init__(self, arm: str):
        self.arm = arm

    def _rows(self, run: RunFiles) -> list[dict]:
        return [r for r in run.rows if r["arm"] == self.arm]

    def notes(self, run: RunFiles) -> list[str]:
        return [f"Y-decoder samples: the captions {self.arm}'s decoder trained on by that checkpoint."]

    def references(self, run: RunFiles) -> list[tuple[str, str]]:
        last = max(r["milestone"] for r in self._rows(run))
        ceilings = [r["decoder_ceiling_cider"] for r in self._rows(run)
                    if r["milestone"] == last and r.get("decoder_ceiling_cider") is not None]
        if not ceilings:
            return []
        return [(f"CIDEr of {self.arm}'s Y-decoder on true embeddings, decode(encode(reference 0)) against the other "
                 f"references (bounds {self.arm}'s captioning)", fmt(float(np.mean(ceilings))))]

    def controls(self, run: RunFiles) -> list[str]:
        n = next((r["decoder_params"] for r in self._rows(run) if r.get("decoder_params")), None)
        return [f"- {self.arm}: its Y-decoder has {n:,} parameters, not counted in its trainable parameters above."] if n else []


def decoder_arms(run: RunFiles) -> list[str]:
    """The arms whose rows show a Y-decoder, in the run's order."""
    decoded = {r["arm"] for r in run.rows if any(r.get(k) is not None for k in
                                                  ("decoder_samples", "decoder_params", "decoder_ceiling_cider"))}
    return [a for a in run.arms if a in decoded]


def arm_sections(run: RunFiles) -> list[ReportSections]:
    """One provider per arm whose rows show a Y-decoder."""
    return [YDecoderSections(a) for a in decoder_arms(run)]
