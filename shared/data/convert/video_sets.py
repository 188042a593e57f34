"""The video benchmarks of the paper's section 4.4, from their public annotation files.

- MSR-VTT (captioning): ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``:
  {"videos": [{"video_id", "category", "split"}], "sentences": [{"video_id", "caption"}]}; splits
  train / validate / test; with ``--label-file category.txt`` the category name is the label.
- YouCook2 (captioning of procedure segments): ``youcookii_annotations_trainval.json``:
  {"database": {<youtube id>: {"subset", "recipe_type", "annotations": [{"id", "segment": [start,
  end], "sentence"}]}}}; one clip per segment (start/end in the manifest), segments of one video
  share a split; ``--label-file label_foodtype.csv`` names the recipe type as the label. The test
  file's segments carry no sentence (withheld) and are skipped, counted.
- CrossTask (classification, the label file is ``tasks_primary.txt``: blocks of task id, title,
  url, step count, comma-separated step names): ``--level step`` makes one clip per annotated step
  (``annotations/<task>_<video>.csv``: step number from 1, start, end; caption = the step's name;
  label by ``--label``: ``task/step`` (default) "<task title>: <step>", since step names repeat
  across tasks ("pour water") and must stay distinct classes; ``step`` the name alone, merged
  across tasks; ``task`` the task's title); ``--level task`` one clip per video of ``videos.csv``
  (task, video, url; label = the task's title). Videos listed in ``--val-videos`` (videos_val.csv)
  get the split val. ``videos.csv`` also lists the related tasks' videos: dropped, counted, unless
  ``--related-tasks tasks_related.txt`` names them (kept, labelled by their titles).
Media are found under ``--media-root`` by video id (any extension, any subfolder); a missing one is
reported where the official layout has it (YouCook2: ``<subset>/<recipe type>/<id>.mp4``).
Ids: the video id (MSR-VTT, CrossTask task level), ``<video>_<annotation id>`` (YouCook2),
``<video>_<row of its annotation file>`` (CrossTask steps).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterator

from shared.data.convert.common import ConvertError, MediaFinder, Record, clip_id, load_json, need, read_label_file

log = logging.getLogger(__name__)


# ---- MSR-VTT ----------------------------------------------------------------------------------
def msrvtt_arguments(p) -> None:
    p.add_argument("--annotations", required=True, type=Path, nargs="+",
                   help="train_val_videodatainfo.json [test_videodatainfo.json]")
    p.add_argument("--media-root", required=True, type=Path, help="folder of the videos (video0.mp4 ...)")
    p.add_argument("--label-file", type=Path, help="category.txt (name and number per line): categories as labels")


def msrvtt_records(args) -> Iterator[Record]:
    finder = MediaFinder(args.media_root)
    names = read_label_file(args.label_file) if args.label_file else None
    for path in args.annotations:
        data = load_json(path)
        captions: dict[str, list[str]] = {}
        for i, s in enumerate(need(data, "sentences", str(path))):
            where = f"{path}: sentences[{i}]"
            captions.setdefault(str(need(s, "video_id", where)), []).append(str(need(s, "caption", where)))
        for i, v in enumerate(need(data, "videos", str(path))):
            where = f"{path}: videos[{i}]"
            vid = str(need(v, "video_id", where))
            label = None
            if names is not None:
                category = str(need(v, "category", where))
                if category not in names:
                    raise ConvertError(f"{where}: category {category} is not in {args.label_file}")
                label = names[category]
            yield Record(clip_id(vid), finder.find(vid, ".mp4"), captions.get(vid, []), where, label=label,
                         split=str(need(v, "split", where)))


# ---- YouCook2 ---------------------------------------------------------------------------------
def youcook2_arguments(p) -> None:
    p.add_argument("--annotations", required=True, type=Path, nargs="+", help="youcookii_annotations_trainval.json")
    p.add_argument("--media-root", required=True, type=Path,
                   help="folder of the videos (raw_videos/: <subset>/<recipe type>/<youtube id>.<ext> or flat)")
    p.add_argument("--label-file", type=Path, help="label_foodtype.csv (recipe type id, name): recipe types as labels")


def youcook2_records(args) -> Iterator[Record]:
    finder = MediaFinder(args.media_root)
    names = read_label_file(args.label_file) if args.label_file else None
    withheld = 0
    for path in args.annotations:
        database = need(load_json(path), "database", str(path))
        for vid, video in database.items():
            where = f"{path}: database[{vid!r}]"
            label = None
            if names is not None:
                recipe = str(need(video, "recipe_type", where))
                if recipe not in names:
                    raise ConvertError(f"{where}: recipe type {recipe} is not in {args.label_file}")
                label = names[recipe]
            subset = str(need(video, "subset", where))
            # the official raw_videos/ layout, where a user looks for a missing video
            media = finder.find(vid, expected=f"{subset}/{video.get('recipe_type', '')}/{vid}.mp4".replace("//", "/"))
            for i, seg in enumerate(need(video, "annotations", where)):
                place = f"{where}.annotations[{i}]"
                if "sentence" not in seg:
                    withheld += 1
                    continue
                start, end = need(seg, "segment", place)
                yield Record(clip_id(vid, seg.get("id", i)), media, [str(seg["sentence"])], place, label=label,
                             split=subset, start=float(start), end=float(end), group=vid)
    if withheld:
        log.info("youcook2: %d segments without a sentence (the withheld test annotations) skipped", withheld)


# ---- CrossTask --------------------------------------------------------------------------------
LABELS = ("task/step", "step", "task")  # --label: how a step clip is labelled


def crosstask_arguments(p) -> None:
    p.add_argument("--tasks", required=True, type=Path, help="tasks_primary.txt: the label file (tasks and their steps)")
    p.add_argument("--level", choices=("step", "task"), default="step",
                   help="step: one clip per annotated step segment (CrossTask-Step); task: one clip per video")
    p.add_argument("--label", choices=LABELS, help="--level step: a clip's label: task/step (default) '<task title>: "
                   "<step>', distinct across tasks; step: the step's name alone (equal names of different tasks "
                   "become one class); task: the task's title")
    p.add_argument("--step-annotations", type=Path, help="annotations/ folder of <task>_<video>.csv (--level step)")
    p.add_argument("--videos", type=Path, help="videos.csv: task, video, url (--level task)")
    p.add_argument("--related-tasks", type=Path, help="tasks_related.txt: keep the related tasks' videos of "
                   "videos.csv (--level task; dropped, counted, without it)")
    p.add_argument("--val-videos", type=Path, help="videos_val.csv: these videos get the split val")
    p.add_argument("--media-root", required=True, type=Path, help="folder of the videos (<youtube id>.<ext>)")


def read_tasks(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{task id: (title, step names)} from CrossTask's blocks of id, title, url, step count, steps."""
    if not path.is_file():
        raise ConvertError(f"--tasks: no such file: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    tasks, n = {}, 0
    while n < len(lines):
        if not lines[n]:
            n += 1
            continue
        block = lines[n:n + 5]
        if len(block) < 5 or not block[3].isdigit():
            raise ConvertError(f"{path}:{n + 1}: expected task id, title, url, step count and steps on 5 lines")
        steps = [s.strip() for s in block[4].split(",")]
        if len(steps) != int(block[3]):
            raise ConvertError(f"{path}:{n + 5}: {len(steps)} step names for a step count of {block[3]}")
        tasks[block[0]] = (block[1], steps)
        n += 5
    return tasks


def _video_rows(path: Path) -> Iterator[tuple[str, str, str]]:
    """(where, task id, video id) for each row of videos.csv / videos_val.csv."""
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if any(c.strip() for c in row):
                if len(row) < 2:
                    raise ConvertError(f"{path}:{n}: expected task, video, url")
                yield f"{path}:{n}", row[0].strip(), row[1].strip()


def crosstask_records(args) -> Iterator[Record]:
    finder = MediaFinder(args.media_root)
    tasks = read_tasks(args.tasks)
    val = {vid for _, _, vid in _video_rows(args.val_videos)} if args.val_videos else set()
    if args.level == "task":
        yield from _task_records(args, tasks, val, finder)
    else:
        yield from _step_records(args, tasks, val, finder)


def _task_records(args, tasks: dict, val: set, finder: MediaFinder) -> Iterator[Record]:
    if args.videos is None:
        raise ConvertError("--level task: needs --videos videos.csv")
    if args.label not in (None, "task"):
        raise ConvertError(f"--label {args.label}: --level task labels each video by its task (--label task)")
    related = read_tasks(args.related_tasks) if args.related_tasks else {}
    dropped: dict[str, int] = {}
    for where, task, vid in _video_rows(args.videos):
        title = (tasks.get(task) or related.get(task) or (None,))[0]
        if title is None:
            dropped[task] = dropped.get(task, 0) + 1
            continue
        yield Record(clip_id(vid), finder.find(vid, ".mp4"), [title], where, label=title,
                     split="val" if vid in val else None)
    if dropped:  # videos.csv lists the related tasks' videos too; tasks_primary.txt names only the primary ones
        log.warning("crosstask: %d videos of %d tasks not in %s dropped (CrossTask's related tasks, without step "
                    "annotations); --related-tasks tasks_related.txt keeps them", sum(dropped.values()), len(dropped),
                    args.tasks.name)
    elif related:
        log.info("crosstask: the related tasks' videos kept (%d tasks in %s)", len(related), args.related_tasks.name)


def _step_label(title: str, step: str, how: str) -> str:
    return {"task/step": f"{title}: {step}", "step": step, "task": title}[how]


def _step_records(args, tasks: dict, val: set, finder: MediaFinder) -> Iterator[Record]:
    if args.step_annotations is None or not args.step_annotations.is_dir():
        raise ConvertError(f"--level step: --step-annotations must be the annotations folder, got {args.step_annotations}")
    how, skipped = args.label or "task/step", 0
    for path in sorted(args.step_annotations.glob("*.csv")):
        task, _, vid = path.stem.partition("_")
        if task not in tasks:
            skipped += 1
            continue
        title, steps = tasks[task]
        with path.open(newline="", encoding="utf-8-sig") as f:  # csv reads \r\n (the files are CRLF) itself
            for n, row in enumerate(csv.reader(f), start=1):
                where = f"{path}:{n}"
                if not any(c.strip() for c in row):
                    continue
                try:
                    k, start, end = int(row[0]), float(row[1]), float(row[2])
                except (ValueError, IndexError):
                    raise ConvertError(f"{where}: expected step number, start, end; got {row}") from None
                if not 1 <= k <= len(steps):  # step numbers count from 1
                    raise ConvertError(f"{where}: step {k} is not one of task {task}'s {len(steps)} steps (1 to {len(steps)})")
                yield Record(clip_id(vid, n), finder.find(vid, ".mp4"), [steps[k - 1]], where,
                             label=_step_label(title, steps[k - 1], how), split="val" if vid in val else None,
                             start=start, end=end, group=vid)
    if skipped:
        log.warning("crosstask: %d annotation files of tasks not in %s skipped", skipped, args.tasks.name)
