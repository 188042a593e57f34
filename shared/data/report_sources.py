"""The report sections of each data source, by ``data.source``: the report and the model cards ask here."""
from __future__ import annotations

from shared.data.report import DataSections, evaluation_card_lines
from shared.data.synthetic_report import SyntheticSections

SECTIONS = {"synthetic": SyntheticSections, "manifest": DataSections}


def data_sections(cfg: dict) -> DataSections:
    """The sections of the data source a run's config (as a dict) names."""
    return SECTIONS[cfg["data"]["source"]]()


def card_lines(data: dict, cfg: dict) -> list[str]:
    """A model card's "Data" section: what the weights were trained on, what its metrics rest on."""
    return [data_sections(cfg).card(data, cfg), *evaluation_card_lines(data)]
