"""What report.md is assembled from: each data source and each arm adds its own sentences.

``experiments/report.py`` lays out the report and fills its slots from providers: the data source
that ran (``shared.data.report_sources.data_sections``: a manifest, or the synthetic benchmark with its own
sentences in ``shared/data/synthetic_report.py``) and the arms with wording of their own
(``experiments/report_arms.py``). A provider subclasses ``ReportSections`` and overrides the slots
it has something to say in; the report concatenates each slot over its providers, in order, so a
run with N arms or another data source changes the providers, not the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunFiles:
    """A comparison folder's result files, read once: what every section reads (no model)."""

    cfg: dict  # config.yaml
    rows: list[dict]  # metrics.jsonl
    base: dict  # baselines.json
    summary: dict  # summary.json; its "data" record says what data ran (shared/data/report.py)
    arms: list[str]
    seeds: list[int]
    milestones: list[int]
    diffs: dict = field(default_factory=dict)  # (a, b, milestone, metric) -> Difference
    reference: str = ""  # the arm every other is compared with (report.reference); "" = the first arm

    def __post_init__(self):
        if not self.reference and self.arms:
            object.__setattr__(self, "reference", self.arms[0])

    @property
    def data(self) -> dict:
        return self.summary.get("data") or {}


class ReportSections:
    """One provider's lines for each slot of report.md; a slot it does not override stays empty."""

    def data(self, run: RunFiles) -> list[str]:
        """Setup bullets: what data ran (source, clips per split, labels, captions per clip)."""
        return []

    def warnings(self, run: RunFiles) -> list[str]:
        """Paragraphs right after the setup: what limits the reading of every number below."""
        return []

    def notes(self, run: RunFiles) -> list[str]:
        """Sentences under the results table: what a column of this provider's means."""
        return []

    def references(self, run: RunFiles) -> list[tuple[str, str]]:
        """(reference, value) rows of the "Reference points" table."""
        return []

    def controls(self, run: RunFiles) -> list[str]:
        """Bullets of "Controls": what this provider gives one arm, or every arm alike."""
        return []

    def scale(self, run: RunFiles) -> list[str]:
        """Sentences on why the numbers are not on the paper's scale."""
        return []


SLOTS = ("data", "warnings", "notes", "references", "controls", "scale")


def gather(providers: list[ReportSections], run: RunFiles) -> dict[str, list]:
    """slot -> every provider's lines (or rows) for it, in provider order."""
    return {slot: [x for p in providers for x in getattr(p, slot)(run)] for slot in SLOTS}
