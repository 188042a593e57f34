"""Converters from public dataset layouts to the suite's manifest (``python -m experiments make-manifest``).

Each format is a pair (add its command-line options, yield ``Record``s from them); ``common`` maps
splits, checks and writes the manifest and the missing-media report the same way for all.
"""
from __future__ import annotations

from shared.data.convert import coco, hf, table, video_sets
from shared.data.convert.common import ConvertError, Record, SplitRule, parse_split_map, write_manifest

# format -> (one line of help, add_arguments, records)
FORMATS = {
    "table": ("a folder of videos or images + a CSV/TSV/JSON/JSONL table of captions (and labels, splits)",
              table.add_arguments, table.records),
    "coco": ("COCO caption JSON (captions_train2017.json ...) or Karpathy's dataset_coco.json",
             coco.add_arguments, coco.records),
    "msrvtt": ("MSR-VTT's train_val_videodatainfo.json / test_videodatainfo.json (captioning)",
               video_sets.msrvtt_arguments, video_sets.msrvtt_records),
    "youcook2": ("YouCook2's youcookii_annotations_trainval.json: one clip per captioned segment",
                 video_sets.youcook2_arguments, video_sets.youcook2_records),
    "crosstask": ("CrossTask: tasks_primary.txt as the label file, step segments or whole videos (classification)",
                  video_sets.crosstask_arguments, video_sets.crosstask_records),
    "hf": ("a Hugging Face datasets dataset saved on disk (save_to_disk, or parquet/arrow files)",
           hf.add_arguments, hf.records),
}

__all__ = ["FORMATS", "ConvertError", "Record", "SplitRule", "parse_split_map", "write_manifest"]
