"""COCO captions: ``captions_<split><year>.json`` ({"images": [{"id", "file_name"}], "annotations":
[{"image_id", "caption"}]}), or Karpathy's split file ``dataset_coco.json`` ({"images": [{"filepath",
"filename", "split", "sentences": [{"raw"}], "cocoid"}]}). The official files' split comes from the
file name (train / val / test), Karpathy's from each image (restval counts as train). Ids are the
image ids (``cocoid``); a missing image is reported where COCO's layout has it (``train2017/<file>``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from shared.data.convert.common import ConvertError, MediaFinder, Record, clip_id, load_json, need


def add_arguments(p) -> None:
    p.add_argument("--annotations", required=True, type=Path, nargs="+",
                   help="captions_train2017.json captions_val2017.json ..., or Karpathy's dataset_coco.json")
    p.add_argument("--media-root", required=True, type=Path,
                   help="folder holding the images (e.g. the one with train2017/ and val2017/ in it)")


def _split_of(path: Path) -> tuple[str | None, str | None]:
    """(split, image folder) from the file name: captions_val2017.json -> ("val", "val2017")."""
    m = re.search(r"(train|val|test)(\d{4})?", path.stem.lower())
    return (m.group(1), m.group(0)) if m else (None, None)


def _official(data: dict, path: Path, finder: MediaFinder) -> Iterator[Record]:
    images = {}
    for i, img in enumerate(need(data, "images", str(path))):
        where = f"{path}: images[{i}]"
        images[need(img, "id", where)] = (str(need(img, "file_name", where)), where)
    captions: dict = {}
    for i, ann in enumerate(need(data, "annotations", str(path))):
        where = f"{path}: annotations[{i}]"
        image_id = need(ann, "image_id", where)
        if image_id not in images:
            raise ConvertError(f"{where}: image_id {image_id!r} is not in 'images'")
        captions.setdefault(image_id, []).append(str(need(ann, "caption", where)))
    split, folder = _split_of(path)
    for image_id, (name, where) in images.items():
        if image_id in captions:  # COCO's test images come without captions
            media = finder.find(name, expected=f"{folder}/{name}" if folder else None)
            yield Record(clip_id(image_id), media, captions[image_id], where, split=split)


def _karpathy(data: dict, path: Path, finder: MediaFinder) -> Iterator[Record]:
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        name = str(need(img, "filename", where))
        rel = Path(str(img.get("filepath", ""))) / name
        cid = img.get("cocoid", img.get("imgid", Path(name).stem))
        caps = [str(need(s, "raw", where)) for s in need(img, "sentences", where)]
        yield Record(clip_id(cid), finder.find(str(rel)), caps, where, split=str(need(img, "split", where)))


def records(args) -> Iterator[Record]:
    finder = MediaFinder(args.media_root)
    for path in args.annotations:
        data = load_json(path)
        images = need(data, "images", str(path))
        karpathy = bool(images) and isinstance(images[0], dict) and "sentences" in images[0]
        yield from (_karpathy if karpathy else _official)(data, path, finder)
