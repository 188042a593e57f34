"""make-manifest: each source format, written here in miniature with the public files' field names,
becomes a manifest that the suite reads; splits kept or assigned by a seeded rule; missing media
reported as validate reports them."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.cli import main
from shared.data.convert.common import Record, SplitRule
from tests.conftest import read_clips
from shared.data.sources import build_dataset
from tests.test_manifest import write_video


def lines(path):
    """The clip lines (the media_root header left out)."""
    return [r for r in map(json.loads, path.read_text().splitlines()) if "id" in r]


def media_root(path):
    """The folder a manifest's relative media are read from, as its first line names it."""
    first = json.loads(path.read_text().splitlines()[0])
    return (path.parent / first["media_root"]).resolve() if "media_root" in first else path.parent.resolve()


def make(*args) -> int:
    return main(["make-manifest", *map(str, args)])


def test_table_with_a_folder_of_images_and_videos(tmp_path, smoke_cfg):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    write_video(media / "sub" / "walk.mp4")
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(media / "cat.png")
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "caption", "label"])
        w.writerow(["sub/walk.mp4", "a grey clip brightens", "brighten"])
        w.writerow(["sub/walk.mp4", "it gets lighter", "brighten"])  # a second caption of the same clip
        w.writerow(["cat", "a still cat", "cat"])  # a bare name: found by stem
        w.writerow(["gone.mp4", "never downloaded", "cat"])
    out = tmp_path / "m.jsonl"
    assert make("table", "--table", tmp_path / "captions.csv", "--media-root", media, "--out", out,
                "--val-frac", 0, "--test-frac", 0) == 0
    rows = {r["id"]: r for r in lines(out)}
    assert rows["sub__walk"]["captions"] == ["a grey clip brightens", "it gets lighter"]
    assert json.loads(out.read_text().splitlines()[0]) == {"media_root": "media"}  # recorded once, relative
    assert rows["sub__walk"]["media"] == "sub/walk.mp4" and rows["cat"]["media"] == "cat.png"
    assert {r["split"] for r in rows.values()} == {"train"}
    # missing media: listed as validate lists unreadable files, and excluded the same way
    report = tmp_path / "m.check"
    bad = lines(report / "invalid.jsonl")
    assert [(b["line"], b["id"]) for b in bad] == [(4, "gone")] and "file not found" in bad[0]["problem"]
    ds = build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={out}", f"data.manifest.exclude={report}"))
    assert "gone" not in [ds.split(s).clip(i).id for s in ("train", "test") for i in range(len(ds.split(s)))]
    assert ds.label_texts == ["brighten", "cat"]
    # --missing drop leaves them out; the same seed gives the same manifest
    again = tmp_path / "again.jsonl"
    assert make("table", "--table", tmp_path / "captions.csv", "--media-root", media, "--out", again,
                "--val-frac", 0, "--test-frac", 0, "--missing", "drop") == 0
    assert [r for r in lines(again)] == [r for r in lines(out) if r["id"] != "gone"]


def test_jsonl_table_keeps_its_splits_and_names_bad_rows(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    rows = [{"file_name": "a.jpg", "text": ["one", "two"], "subset": "validation"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert make("table", "--table", tmp_path / "t.jsonl", "--out", tmp_path / "m.jsonl") == 0
    assert (tmp_path / "m.jsonl").read_text().splitlines()[0].startswith('{"id": "a"')  # the root is its own folder: no header
    assert lines(tmp_path / "m.jsonl") == [{"id": "a", "media": "a.jpg", "captions": ["one", "two"], "split": "val"}]
    (tmp_path / "t.jsonl").write_text(json.dumps({"file_name": "a.jpg", "text": "x", "subset": "holdout"}) + "\n")
    capsys.readouterr()
    assert make("table", "--table", tmp_path / "t.jsonl", "--out", tmp_path / "m.jsonl") == 2
    assert "t.jsonl:1: unknown split 'holdout'; map it with --split-map" in capsys.readouterr().err
    assert make("table", "--table", tmp_path / "t.jsonl", "--out", tmp_path / "m.jsonl", "--split-map", "holdout=test") == 0
    (tmp_path / "t.jsonl").write_text(json.dumps({"file_name": "a.jpg", "words": "x"}) + "\n")
    assert make("table", "--table", tmp_path / "t.jsonl", "--out", tmp_path / "m.jsonl") == 2
    assert "t.jsonl:1: no caption column (looked for captions, caption" in capsys.readouterr().err


def test_coco_official_and_karpathy(tmp_path):
    for folder, name in (("train2017", "000000000009.jpg"), ("val2017", "000000000139.jpg")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / folder / name)
    for split, image_id, name in (("train", 9, "000000000009.jpg"), ("val", 139, "000000000139.jpg")):
        (tmp_path / f"captions_{split}2017.json").write_text(json.dumps({
            "info": {}, "licenses": [], "images": [{"id": image_id, "file_name": name, "height": 8, "width": 8}],
            "annotations": [{"image_id": image_id, "id": 1, "caption": "A plate of food. "},
                            {"image_id": image_id, "id": 2, "caption": "Some food on a plate."}]}))
    out = tmp_path / "coco.jsonl"
    assert make("coco", "--annotations", tmp_path / "captions_train2017.json", tmp_path / "captions_val2017.json",
                "--media-root", tmp_path, "--out", out) == 0
    assert media_root(out) == tmp_path.resolve()
    assert [(r["id"], r["split"], r["media"], r["captions"][0]) for r in lines(out)] == [
        ("9", "train", "train2017/000000000009.jpg", "A plate of food."),
        ("139", "val", "val2017/000000000139.jpg", "A plate of food.")]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": "val2017", "filename": "000000000139.jpg", "imgid": 0, "split": "restval", "cocoid": 139,
         "sentids": [0], "sentences": [{"tokens": ["a", "plate"], "raw": "A plate.", "imgid": 0, "sentid": 0}]}]}))
    assert make("coco", "--annotations", tmp_path / "dataset_coco.json", "--media-root", tmp_path, "--out", out) == 0
    assert lines(out) == [{"id": "139", "media": "val2017/000000000139.jpg", "captions": ["A plate."], "split": "train"}]


def test_msrvtt_with_categories(tmp_path):
    (tmp_path / "videos").mkdir()
    for i in range(3):
        write_video(tmp_path / "videos" / f"video{i}.mp4", n=4)
    info = {"info": {"year": "2016"}, "videos": [
        {"category": 9, "url": "u", "video_id": f"video{i}", "start time": 1.0, "end time": 11.0, "split": s, "id": i}
        for i, s in enumerate(("train", "validate", "test"))],
        "sentences": [{"caption": f"caption {k} of video{i}", "video_id": f"video{i}", "sen_id": 2 * i + k}
                      for i in range(3) for k in range(2)]}
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(info))
    (tmp_path / "category.txt").write_text("music\t0\nsports\t9\n")
    out = tmp_path / "msrvtt.jsonl"
    assert make("msrvtt", "--annotations", tmp_path / "train_val_videodatainfo.json", "--media-root", tmp_path / "videos",
                "--label-file", tmp_path / "category.txt", "--out", out) == 0
    clips = read_clips(out)
    assert [(c.id, c.split, c.label, len(c.captions)) for c in clips] == [
        ("video0", "train", "sports", 2), ("video1", "val", "sports", 2), ("video2", "test", "sports", 2)]


def test_youcook2_segments_keep_their_video_split_and_times(tmp_path, smoke_cfg):
    (tmp_path / "raw_videos" / "training" / "113").mkdir(parents=True)
    write_video(tmp_path / "raw_videos" / "training" / "113" / "GLd3aX16zBg.mp4", n=40, fps=10)  # 4 s
    db = {"database": {
        "GLd3aX16zBg": {"duration": 4.0, "subset": "training", "recipe_type": "113",
                        "video_url": "https://www.youtube.com/watch?v=GLd3aX16zBg",
                        "annotations": [{"segment": [0, 1], "id": 0, "sentence": "spread margarine on bread"},
                                        {"segment": [3, 4], "id": 1, "sentence": "place cheese on the bread"}]},
        "xHr8X2Wpmno": {"duration": 300.0, "subset": "validation", "recipe_type": "101", "video_url": "u",
                        "annotations": [{"segment": [5, 9], "id": 0, "sentence": "cut the tomato"}]}}}
    (tmp_path / "youcookii_annotations_trainval.json").write_text(json.dumps(db))
    (tmp_path / "youcookii_annotations_test_segments_only.json").write_text(json.dumps({"database": {
        "zzz": {"duration": 9.0, "subset": "testing", "recipe_type": "101", "annotations": [{"segment": [1, 2], "id": 0}]}}}))
    (tmp_path / "label_foodtype.csv").write_text("101,bruschetta\n113,grilled cheese\n")
    out = tmp_path / "yc2.jsonl"
    assert make("youcook2", "--annotations", tmp_path / "youcookii_annotations_trainval.json",
                tmp_path / "youcookii_annotations_test_segments_only.json", "--media-root", tmp_path / "raw_videos",
                "--label-file", tmp_path / "label_foodtype.csv", "--out", out) == 0
    rows = lines(out)
    assert [(r["id"], r["split"], r["label"], r["start"], r["end"]) for r in rows] == [
        ("GLd3aX16zBg_0", "train", "grilled cheese", 0.0, 1.0), ("GLd3aX16zBg_1", "train", "grilled cheese", 3.0, 4.0),
        ("xHr8X2Wpmno_0", "val", "bruschetta", 5.0, 9.0)]  # the test file's segments have no sentence: skipped
    assert [b["id"] for b in lines(tmp_path / "yc2.check" / "invalid.jsonl")] == ["xHr8X2Wpmno_0"]
    # the reader samples frames inside each segment (frame i of the video is grey level 10 * i)
    train = build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={out}")).split("train")
    first, last = (train.frames(i, 2, 16).reshape(2, -1).mean(1) for i in (0, 1))
    assert np.allclose(first, [25, 75], atol=12) and np.allclose(last, [(10 * 32) % 250, (10 * 37) % 250], atol=12)


def test_crosstask_steps_and_tasks(tmp_path):
    (tmp_path / "tasks_primary.txt").write_text(
        "16815\nJack Up a Car\nhttps://www.wikihow.com/Jack-Up-a-Car\n3\nbrake on,raise jack,lower jack\n\n"
        "23521\nMake Jello Shots\nhttps://www.wikihow.com/Make-Jello-Shots\n2\npour water,stir mixture\n\n")
    (tmp_path / "videos.csv").write_text("16815,a_b-c1,https://www.youtube.com/watch?v=a_b-c1\n"
                                         "23521,zz9,https://www.youtube.com/watch?v=zz9\n99999,other,u\n")
    (tmp_path / "videos_val.csv").write_text("23521,zz9,https://www.youtube.com/watch?v=zz9\n")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "16815_a_b-c1.csv").write_text("1,1.5,3.0\n3,10.0,12.25\n")
    (tmp_path / "annotations" / "23521_zz9.csv").write_text("2,4.0,6.0\n")
    (tmp_path / "v").mkdir()
    for vid in ("a_b-c1", "zz9"):
        write_video(tmp_path / "v" / (f"{vid}.mkv" if vid == "zz9" else f"{vid}.mp4"), n=4)
    steps = tmp_path / "steps.jsonl"
    assert make("crosstask", "--tasks", tmp_path / "tasks_primary.txt", "--step-annotations", tmp_path / "annotations",
                "--val-videos", tmp_path / "videos_val.csv", "--media-root", tmp_path / "v", "--out", steps,
                "--split-map", "val=test") == 0
    rows = lines(steps)
    assert [(r["id"], r["label"], r["captions"], r["start"], r["end"]) for r in rows] == [
        ("a_b-c1_1", "Jack Up a Car: brake on", ["brake on"], 1.5, 3.0),
        ("a_b-c1_2", "Jack Up a Car: lower jack", ["lower jack"], 10.0, 12.25),
        ("zz9_1", "Make Jello Shots: stir mixture", ["stir mixture"], 4.0, 6.0)]
    assert rows[2]["split"] == "test" and rows[2]["media"] == "zz9.mkv" and rows[0]["split"] == rows[1]["split"]
    tasks = tmp_path / "tasks.jsonl"
    assert make("crosstask", "--tasks", tmp_path / "tasks_primary.txt", "--level", "task", "--videos",
                tmp_path / "videos.csv", "--media-root", tmp_path / "v", "--out", tasks) == 0
    assert [(r["id"], r["label"]) for r in lines(tasks)] == [("a_b-c1", "Jack Up a Car"), ("zz9", "Make Jello Shots")]


def test_hugging_face_dataset_saved_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    def png(level):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["dark", "light"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": [png(10), png(240)], "caption": ["a dark square", "a light square"],
                                             "label": [0, 1]}, features=features),
        "test": datasets.Dataset.from_dict({"image": [png(20)], "caption": ["dark again"], "label": [0]}, features=features)})
    dd.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "hf.jsonl"
    assert make("hf", "--dataset", tmp_path / "ds", "--out", out) == 0
    rows = lines(out)
    assert [(r["id"], r["split"], r["label"], r["captions"]) for r in rows] == [
        ("train-00000000", "train", "dark", ["a dark square"]), ("train-00000001", "train", "light", ["a light square"]),
        ("test-00000000", "test", "dark", ["dark again"])]
    stored = tmp_path / rows[1]["media"]
    assert stored.parent.name == "hf_media" and np.asarray(Image.open(stored)).mean() == 240  # bytes written once
    # a folder of parquet files with a path column: splits from the file names
    (tmp_path / "pq").mkdir()
    datasets.Dataset.from_dict({"video": ["../ds_media/clip.mp4"], "text": ["a clip"]}).to_parquet(
        str(tmp_path / "pq" / "train-00000-of-00001.parquet"))
    (tmp_path / "ds_media").mkdir()
    write_video(tmp_path / "ds_media" / "clip.mp4", n=4)
    assert make("hf", "--dataset", tmp_path / "pq", "--out", tmp_path / "pq.jsonl") == 0
    assert lines(tmp_path / "pq.jsonl") == [{"id": "clip", "media": "ds_media/clip.mp4",
                                             "captions": ["a clip"], "split": "train"}]


def test_the_seeded_split_rule_is_stable_and_keeps_groups_together():
    rule = SplitRule(seed=3, val_frac=0.1, test_frac=0.2)
    recs = [Record(f"v{i // 4}_{i % 4}", __import__("pathlib").Path(f"v{i // 4}.mp4"), ["c"], "x", group=f"v{i // 4}")
            for i in range(4000)]
    splits = [rule.of(r) for r in recs]
    assert splits == [rule.of(r) for r in reversed(recs)][::-1]  # order does not matter
    assert all(len(set(splits[i:i + 4])) == 1 for i in range(0, 4000, 4))  # a video's segments share a split
    shares = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(shares["test"] - 0.2) < 0.05 and abs(shares["val"] - 0.1) < 0.05
    assert [SplitRule(seed=4, val_frac=0.1, test_frac=0.2).of(r) for r in recs] != splits  # the seed matters


def test_the_commands_of_docs_data_parse():
    """Every make-manifest example of docs/data.md names a format and options the command has."""
    import re
    import shlex

    from experiments.cli import build_parser
    from tests.conftest import ROOT

    commands = [c for c in re.findall(r"`(python -m experiments make-manifest [^`]+)`", (ROOT / "docs" / "data.md").read_text())
                if "FORMAT" not in c]  # the placeholders of the prose
    formats = set()
    for command in commands:
        args = build_parser("make-manifest").parse_args(shlex.split(command)[3:])
        formats.add(args.format)
    from shared.data.convert import FORMATS

    assert formats == set(FORMATS)


# ---- one policy for every format: the quirks the public files ship with ---------------------------
SAFE_ID = __import__("re").compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def check_ids(rows):
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and all(SAFE_ID.match(i) for i in ids), ids


def test_coco_captions_are_stripped_and_blank_ones_counted(tmp_path, capsys):
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "val2017" / "000000000139.jpg")
    images = [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "000000000285.jpg"},
              {"id": 632, "file_name": "000000000632.jpg"}]
    anns = [{"image_id": 139, "caption": "A plate of  food.\n "}, {"image_id": 139, "caption": "   "},
            {"image_id": 285, "caption": " A bear\tin the grass. "}, {"image_id": 632, "caption": "\n"}]
    (tmp_path / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    out = tmp_path / "coco.jsonl"
    assert make("coco", "--annotations", tmp_path / "captions_val2017.json", "--media-root", tmp_path, "--out", out) == 0
    log = capsys.readouterr().err
    rows = lines(out)
    assert [(r["id"], r["captions"]) for r in rows] == [("139", ["A plate of food."]), ("285", ["A bear in the grass."])]
    summary = json.loads((tmp_path / "coco.check" / "make_manifest.json").read_text())
    assert summary["empty_captions_dropped"] == 2 and summary["clips_without_caption"] == 1
    assert "images[2]" in summary["clips_without_caption_examples"][0]  # the image left out, named at its source
    assert "1 clips left out: no caption left" in log and "2 empty captions dropped" in log
    # a missing image is reported where COCO's layout has it, not a guess at the root
    assert lines(tmp_path / "coco.check" / "invalid.jsonl")[0]["media"] == str(tmp_path / "val2017" / "000000000285.jpg")
    assert "split val is" not in log and "split test is empty" in log  # val only: test warned


def youcook2_db():
    return {"database": {
        "GLd3aX16zBg": {"subset": "training", "recipe_type": "113", "annotations": [
            {"segment": [0, 1], "id": 0, "sentence": "spread margarine on bread "}]},
        "xHr8X2Wpmno": {"subset": "validation", "recipe_type": "101", "annotations": [
            {"segment": [0, 2], "id": 3, "sentence": "cut the\ntomato"}]},
        "a-b_c9": {"subset": "training", "recipe_type": "101", "annotations": [
            {"segment": [0, 1], "id": 0, "sentence": "boil water"}]},
        "removed0001": {"subset": "validation", "recipe_type": "113", "annotations": [
            {"segment": [1, 2], "id": 0, "sentence": "gone from YouTube"}]}}}


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_youcook2_layouts_stable_ids_and_missing_at_the_official_path(tmp_path, layout):
    root = tmp_path / "raw_videos"
    files = {"GLd3aX16zBg": ("training/113", ".mp4"), "xHr8X2Wpmno": ("validation/101", ".mkv"),
             "a-b_c9": ("training/101", ".webm")}
    for vid, (folder, ext) in files.items():
        where = root / folder if layout == "nested" else root
        where.mkdir(parents=True, exist_ok=True)
        write_video(where / f"{vid}{ext}", n=20, codec="libvpx" if ext == ".webm" else "mpeg4")
    (tmp_path / "yc2.json").write_text(json.dumps(youcook2_db()))
    out = tmp_path / "data" / "yc2.jsonl"
    args = ("youcook2", "--annotations", tmp_path / "yc2.json", "--media-root", root, "--out", out)
    assert make(*args) == 0
    rows = lines(out)
    check_ids(rows)
    assert [(r["id"], r["captions"]) for r in rows] == [
        ("GLd3aX16zBg_0", ["spread margarine on bread"]), ("xHr8X2Wpmno_3", ["cut the tomato"]),
        ("a-b_c9_0", ["boil water"]), ("removed0001_0", ["gone from YouTube"])]
    media = {r["id"]: r["media"] for r in rows}
    assert media["xHr8X2Wpmno_3"] == ("validation/101/xHr8X2Wpmno.mkv" if layout == "nested" else "xHr8X2Wpmno.mkv")
    assert media_root(out) == root.resolve() and not Path(rows[0]["media"]).is_absolute()
    # the removed video: reported at raw_videos/<subset>/<recipe type>/<id>.mp4, whatever the layout
    missing, = lines(out.with_suffix(".check") / "invalid.jsonl")
    assert missing["media"] == str(root / "validation" / "113" / "removed0001.mp4")
    before = out.read_bytes()
    assert make(*args) == 0 and out.read_bytes() == before  # re-conversion: the same ids, the same file


def crosstask_files(tmp_path, crlf=True):
    nl = "\r\n" if crlf else "\n"
    (tmp_path / "tasks_primary.txt").write_text(nl.join([
        "16815", "Make Jello Shots", "https://www.wikihow.com/Make-Jello-Shots", "2", "pour water,stir mixture", "",
        "23521", "Make Coffee", "https://www.wikihow.com/Make-Coffee", "2", "pour water,add milk", ""]), newline="")
    (tmp_path / "tasks_related.txt").write_text(nl.join([
        "99999", "Make Tea", "u", "1", "steep tea", ""]), newline="")
    (tmp_path / "videos.csv").write_text(nl.join(["16815,j1,u", "23521,c1,u", "99999,t1,u", "99999,t2,u", ""]), newline="")
    (tmp_path / "videos_val.csv").write_text(nl.join(["23521,c1,u", ""]), newline="")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "16815_j1.csv").write_text(nl.join(["1,1.0,2.0", "2,3.0,4.0", ""]), newline="")
    (tmp_path / "annotations" / "23521_c1.csv").write_text(nl.join(["1,0.5,1.5", "2,2.0,3.5", ""]), newline="")
    (tmp_path / "videos").mkdir()
    for vid in ("j1", "c1", "t1", "t2"):
        write_video(tmp_path / "videos" / f"{vid}.mp4", n=4)


def test_crosstask_labels_stay_distinct_across_tasks(tmp_path, capsys):
    crosstask_files(tmp_path)
    common = ("crosstask", "--tasks", tmp_path / "tasks_primary.txt", "--step-annotations", tmp_path / "annotations",
              "--media-root", tmp_path / "videos", "--val-videos", tmp_path / "videos_val.csv")
    out = tmp_path / "steps.jsonl"
    assert make(*common, "--out", out, "--splits", "keep", "--val-frac", 0, "--test-frac", 0) == 0
    rows = lines(out)
    check_ids(rows)
    assert [(r["id"], r["label"], r["captions"], r["start"]) for r in rows] == [  # CRLF read, steps from 1
        ("j1_1", "Make Jello Shots: pour water", ["pour water"], 1.0),
        ("j1_2", "Make Jello Shots: stir mixture", ["stir mixture"], 3.0),
        ("c1_1", "Make Coffee: pour water", ["pour water"], 0.5), ("c1_2", "Make Coffee: add milk", ["add milk"], 2.0)]
    log = capsys.readouterr().err
    assert "(train 2, val 2, test 0)" in log and "split test is empty" in log
    assert make(*common, "--out", out, "--label", "step") == 0
    assert sorted({r["label"] for r in lines(out)}) == ["add milk", "pour water", "stir mixture"]  # merged, as asked
    assert make(*common, "--out", out, "--label", "task") == 0
    assert sorted({r["label"] for r in lines(out)}) == ["Make Coffee", "Make Jello Shots"]
    # task level: the related tasks' videos of videos.csv dropped with a line saying so, or kept
    task = ("crosstask", "--tasks", tmp_path / "tasks_primary.txt", "--level", "task", "--videos", tmp_path / "videos.csv",
            "--media-root", tmp_path / "videos", "--splits", "assign", "--val-frac", "0.3", "--test-frac", "0.3")
    assert make(*task, "--out", out) == 0
    assert [r["id"] for r in lines(out)] == ["j1", "c1"]
    assert "2 videos of 1 tasks not in tasks_primary.txt dropped" in capsys.readouterr().err
    assert make(*task, "--out", out, "--related-tasks", tmp_path / "tasks_related.txt") == 0
    assert [(r["id"], r["label"]) for r in lines(out)][2:] == [("t1", "Make Tea"), ("t2", "Make Tea")]


def test_crosstask_without_val_videos_warns_that_val_and_test_are_empty(tmp_path, capsys):
    crosstask_files(tmp_path, crlf=False)
    assert make("crosstask", "--tasks", tmp_path / "tasks_primary.txt", "--step-annotations", tmp_path / "annotations",
                    "--media-root", tmp_path / "videos", "--splits", "keep", "--val-frac", 0, "--test-frac", 0,
                "--out", tmp_path / "s.jsonl") == 0
    log = capsys.readouterr().err
    assert "(train 4, val 0, test 0)" in log
    assert "split val is empty" in log and "split test is empty" in log and "--val-videos" in log
    summary = json.loads((tmp_path / "s.check" / "make_manifest.json").read_text())
    assert summary["splits"] == {"train": 4, "val": 0, "test": 0} and summary["empty_splits"] == ["val", "test"]


def test_excel_bom_csv_tsv_and_ids_with_slashes(tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    for name in ("sub/clip_c.mp4", "clip_a.mp4"):
        write_video(media / name, n=4)
    rows = [["video", "caption", "start", "end", "split"],
            ["sub/clip_c.mp4", "  blue block, drifting  ", "1", "3.0", "train"],
            ["clip_a.mp4", " A worker on a roof . ", "100", "110.5", "test"],
            ["clip_a.mp4", "the same clip, whole", "", "", "val"]]
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        table = tmp_path / f"captions_bom{suffix}"
        with open(table, "w", newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8": a BOM, CRLF
            csv.writer(f, delimiter=delim).writerows(rows)
        assert table.read_bytes()[:3] == b"\xef\xbb\xbf"
        out = tmp_path / f"m{suffix}.jsonl"
        assert make("table", "--table", table, "--media-root", media, "--out", out) == 0
        got = lines(out)
        check_ids(got)
        assert [(r["id"], r["captions"], r["split"]) for r in got] == [
            ("sub__clip_c_1-3", ["blue block, drifting"], "train"), ("clip_a_100-110.5", ["A worker on a roof ."], "test"),
            ("clip_a", ["the same clip, whole"], "val")]
    # an id column's own values, made safe: '/' and spaces never reach a file name
    (tmp_path / "ids.jsonl").write_text(json.dumps({"id": "sub/clip c", "video": "clip_a.mp4", "caption": "x"}) + "\n")
    assert make("table", "--table", tmp_path / "ids.jsonl", "--media-root", media, "--out", tmp_path / "ids_m.jsonl") == 0
    assert lines(tmp_path / "ids_m.jsonl")[0]["id"] == "sub__clip-c"


def test_clip_id_is_one_documented_form():
    from shared.data.convert.common import clip_id

    assert clip_id("video7") == "video7" and clip_id("GLd3aX16zBg", 0) == "GLd3aX16zBg_0"
    assert clip_id("a/b\\c d", 1.5) == "a__b__c-d_1.5" and clip_id(".hidden") == "-hidden"
    long = clip_id("x" * 300)
    assert len(long) == 160 and long == clip_id("x" * 300) and long != clip_id("x" * 301)


def test_hf_ids_and_splits_come_from_the_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "media").mkdir()
    for name in ("a", "b"):
        write_video(tmp_path / "media" / f"{name}.mp4", n=4)
    (tmp_path / "pq").mkdir()
    datasets.Dataset.from_dict({"video_id": ["vid/1", "vid/2"], "video": ["media/a.mp4", "media/b.mp4"],
                                "text": [" A worker on a roof . ", "two\nlines"], "split": ["train", "validation"]}
                               ).to_parquet(str(tmp_path / "pq" / "test-00000-of-00001.parquet"))
    out = tmp_path / "hf.jsonl"
    assert make("hf", "--dataset", tmp_path / "pq", "--media-root", tmp_path, "--out", out) == 0
    assert [(r["id"], r["split"], r["captions"], r["media"]) for r in lines(out)] == [
        ("vid__1", "train", ["A worker on a roof ."], "media/a.mp4"), ("vid__2", "val", ["two lines"], "media/b.mp4")]


@pytest.mark.slow
def test_a_moved_dataset_trains_with_only_media_root_changed(tmp_path, cache_dir, capsys):
    """Converted on one disk, copied to another: the manifest keeps working once re-pointed."""
    import shutil

    disk = tmp_path / "disk1" / "videos"
    disk.mkdir(parents=True)
    rows = [["video", "caption", "label", "split"]]
    for i in range(8):
        write_video(disk / f"v{i}.mp4", n=6)
        for caption in (f"clip {i % 2} brightens", f"clip {i % 2} gets lighter"):  # two rows: two captions
            rows.append([f"v{i}.mp4", caption, f"kind {i % 2}", "train" if i < 4 else "val" if i < 6 else "test"])
    (tmp_path / "t.csv").write_text("".join(",".join(r) + "\n" for r in rows))
    manifest = tmp_path / "home" / "data" / "m.jsonl"
    assert make("table", "--table", tmp_path / "t.csv", "--media-root", disk, "--out", manifest) == 0
    assert json.loads(manifest.read_text().splitlines()[0]) == {"media_root": str(disk)}  # outside: absolute, once
    moved = tmp_path / "disk2" / "videos"
    shutil.move(str(tmp_path / "disk1"), str(tmp_path / "disk2"))
    train = ["train", "--config", str(__import__("tests.conftest").conftest.SMOKE), "--arm", "jepa", "--out",
             str(tmp_path / "run"), f"cache_dir={cache_dir}", "data.source=manifest", f"data.manifest.path={manifest}",
             "train.milestones=[4]", "train.effective_batch=4", "train.micro_batch=4", "eval.max_clips=2"]
    capsys.readouterr()
    assert main(train) == 2
    err = capsys.readouterr().err
    assert "file not found" in err and "data.manifest.media_root=" in err  # the error names the key that fixes it
    assert main([*train, f"data.manifest.media_root={moved}"]) == 0


def test_the_readme_shows_each_converter_as_docs_data_does():
    """A line copied from the README converts as the docs' line does: every README line is one of the docs'
    (CrossTask with --val-videos, or val/test are empty; MSR-VTT and YouCook2 with their label files)."""
    import re

    from tests.conftest import ROOT

    docs = set(re.findall(r"`(python -m experiments make-manifest [^`]+)`", (ROOT / "docs" / "data.md").read_text()))
    readme = re.findall(r"^(python -m experiments make-manifest \S+ .*)$", (ROOT / "README.md").read_text(), re.M)
    crosstask = [c for c in readme if " crosstask " in c]
    assert crosstask and all("--val-videos" in c for c in crosstask)
    assert len(readme) >= 3 and set(readme) <= docs, set(readme) - docs


def test_media_outside_the_root_are_absolute_and_warned(tmp_path, capsys):
    (tmp_path / "media").mkdir()
    (tmp_path / "other").mkdir()
    write_video(tmp_path / "media" / "a.mp4", n=4)
    write_video(tmp_path / "other" / "b.mp4", n=4)
    (tmp_path / "t.csv").write_text(f"video,caption\na.mp4,one\n{tmp_path / 'other' / 'b.mp4'},two\n")
    out = tmp_path / "m.jsonl"
    assert make("table", "--table", tmp_path / "t.csv", "--media-root", tmp_path / "media", "--out", out) == 0
    assert [r["media"] for r in lines(out)] == ["a.mp4", str(tmp_path / "other" / "b.mp4")]
    assert "1 media files outside the media root" in capsys.readouterr().err
