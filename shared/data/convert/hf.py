"""A Hugging Face ``datasets`` dataset on disk: a ``save_to_disk`` folder, or a folder of parquet /
arrow / json / csv files (splits from the file names, as ``load_dataset`` reads them). Needs the
optional ``datasets`` package (``pip install 'jepa-vs-vlm[hf]'``).

The media column holds paths (relative to ``--media-root``, default the dataset folder) or
``Image`` / ``Video`` features; media stored inside the dataset (bytes) are written once into
``--media-out`` as ``<id><ext>``, since a manifest line names a file. A ``ClassLabel`` label column
gives its class names. Splits: a row's own split column (``split``/``subset``, or ``--split-column``)
when there is one, else the ``DatasetDict`` key or data file name. Ids: the id column's value
(``id``, ``video_id``..., or ``--id-column``), else the media path without its extension (rows of one
media file merged, one caption each), else ``<split part>-<row>``; all through ``clip_id``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

from shared.data.convert.common import ConvertError, MediaFinder, Record, clip_id, merge_rows
from shared.data.convert.table import COLUMNS, _captions
from shared.files import atomic_path


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, type=Path, help="the dataset's folder (save_to_disk, or parquet/arrow files)")
    p.add_argument("--media-root", type=Path, help="folder that path-valued media are relative to (default: --dataset); "
                                                  "given, the manifest records it and stores media relative to it")
    p.add_argument("--media-out", type=Path, help="where media stored inside the dataset are written "
                                                  "(default: <manifest name>_media/ beside the manifest)")
    for role in ("id", "media", "caption", "label", "split"):
        p.add_argument(f"--{role}-column", help=f"column of the {role} (default: the first of {', '.join(COLUMNS[role])})")


def load(folder: Path):
    try:
        import datasets
    except ImportError:
        raise ConvertError("the hf format needs the datasets package: pip install 'jepa-vs-vlm[hf]'") from None
    if not folder.is_dir():
        raise ConvertError(f"--dataset: no such folder: {folder}")
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return datasets.load_from_disk(str(folder))
    return datasets.load_dataset(str(folder))  # a folder of data files: builder and splits inferred


def _column(ds, args, role: str, required: bool) -> str | None:
    given = getattr(args, f"{role}_column", None)
    names = list(ds.column_names)
    if given is not None and given not in names:
        raise ConvertError(f"{args.dataset}: --{role}-column {given!r} is not a column; columns: {names}")
    found = given or next((c for c in COLUMNS[role] if c in names), None)
    if found is None and role == "media":
        found = next((c for c, f in ds.features.items() if type(f).__name__ in ("Image", "Video")), None)
    if found is None and required:
        raise ConvertError(f"{args.dataset}: no {role} column (looked for {', '.join(COLUMNS[role])}; columns: "
                           f"{names}); name it with --{role}-column")
    return found


def _stored(value: dict, cid: str, feature, out: Path, finder: MediaFinder) -> Path:
    """The file behind an Image/Video cell ({"bytes", "path"} undecoded): its own path when that exists,
    else its bytes written once as ``out/<id><ext>``."""
    if value.get("path") and (Path(value["path"]).is_file() or not value.get("bytes")):
        return Path(value["path"]) if Path(value["path"]).is_absolute() else finder.find(value["path"])
    suffix = Path(value.get("path") or "").suffix
    if not suffix and type(feature).__name__ == "Image":
        from PIL import Image

        with Image.open(io.BytesIO(value["bytes"])) as img:
            suffix = "." + (img.format or "png").lower()
    target = out / (cid + (suffix or ".mp4"))  # ids are safe file names
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(value["bytes"])
    return target


def records(args) -> Iterator[Record]:
    yield from merge_rows(_rows(args))


def _relative(path: Path, root: Path) -> Path:
    path = Path(os.path.normpath(path.absolute()))
    return path.relative_to(root) if path.is_relative_to(root) else Path(path.name)


def _rows(args) -> Iterator[Record]:
    data = load(args.dataset)
    finder = MediaFinder(args.media_root or args.dataset)
    out = args.media_out or args.manifest.with_name(args.manifest.stem + "_media")
    parts = data.items() if hasattr(data, "keys") else [(None, data)]
    for part, ds in parts:
        media, caption = _column(ds, args, "media", True), _column(ds, args, "caption", True)
        cid_col, label, split_col = (_column(ds, args, r, False) for r in ("id", "label", "split"))
        feature = ds.features[media]
        if type(feature).__name__ in ("Image", "Video"):  # the file, not decoded pixels
            ds = ds.cast_column(media, type(feature)(decode=False))
        names = getattr(ds.features.get(label), "names", None) if label else None
        for i, row in enumerate(ds):
            where = f"{args.dataset}: {part or 'dataset'}[{i}]"
            value = row[media]
            path = None if isinstance(value, dict) else finder.find(str(value).strip())
            if cid_col is not None and row[cid_col] is not None and str(row[cid_col]).strip():
                cid = clip_id(row[cid_col])
            elif path is not None:  # the file's path under the media root, else its name
                cid = clip_id(_relative(path, finder.root).with_suffix("").as_posix())
            else:  # stored media and no id column: the row's place is all there is
                cid = clip_id(f"{part or 'clip'}-{i:08d}")
            path = path or _stored(value, cid, feature, out, finder)
            lab = row[label] if label else None
            own_split = row[split_col] if split_col else None  # the row's own split beats the file it sits in
            yield Record(cid, path, _captions(row[caption], where), where,
                         label=None if lab is None else str(names[lab] if names else lab),
                         split=str(own_split) if own_split is not None else part)
