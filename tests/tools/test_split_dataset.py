"""tools/split_dataset.py and polar_rcnn.data.splits: video-aware splits and near-duplicate reports."""
import json
import os
from collections import Counter

import pytest

from polar_rcnn.data.splits import assign_groups, group_frames
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from tools import split_dataset



@pytest.fixture(scope="module")
def slow_videos(tmp_path_factory):
    """4 videos x 4 frames of slowly moving objects and a still camera: (json_file, image_root)."""
    root = str(tmp_path_factory.mktemp("tools_split"))
    cfg = SyntheticConfig(image_size=(48, 64), num_bands=1, num_videos=4, frames_per_video=4, object_size=(10, 20),
                          speed=(0.5, 1.0), jitter=0, seed=0)
    return generate_split(root, "train", cfg, progress=False), os.path.join(root, "train", "images")


def _split(json_file, image_root, out_dir, *extra):
    return split_dataset.main([json_file, "--image-root", image_root, "--output-dir", str(out_dir), "--no-progress",
                               *extra])


def _without_video_ids(json_file, tmp_path):
    coco = json.load(open(json_file))
    for image in coco["images"]:
        del image["video_id"], image["frame_id"]
    path = str(tmp_path / "novideo.json")
    json.dump(coco, open(path, "w"))
    return path


def test_video_split_keeps_videos_and_annotations_whole(slow_videos, tmp_path, capsys):
    json_file, image_root = slow_videos
    splits = ("train", "val", "test")
    fractions = ["--split", "train=0.5", "--split", "val=0.25", "--split", "test=0.25"]
    code = _split(json_file, image_root, tmp_path, *fractions, "--seed", "3")
    assert code == 0
    assert "No near-duplicate frames across splits" in capsys.readouterr().out
    source = json.load(open(json_file))
    parts = {s: json.load(open(tmp_path / f"train_{s}.json")) for s in splits}
    videos = {s: {im["video_id"] for im in p["images"]} for s, p in parts.items()}
    assert [len(videos[s]) for s in splits] == [2, 1, 1]
    assert set.union(*videos.values()) == {0, 1, 2, 3} and sum(len(v) for v in videos.values()) == 4
    # every image and annotation exactly once, unchanged; annotations follow their images
    images = [im for p in parts.values() for im in p["images"]]
    annotations = [a for p in parts.values() for a in p["annotations"]]
    key = lambda d: d["id"]  # noqa: E731
    assert sorted(images, key=key) == sorted(source["images"], key=key)
    assert sorted(annotations, key=key) == sorted(source["annotations"], key=key)
    for s, p in parts.items():
        ids = {im["id"] for im in p["images"]}
        assert all(a["image_id"] in ids for a in p["annotations"])
        assert p["categories"] == source["categories"]
        assert p["info"]["split"]["name"] == s and p["info"]["split"]["group_by"] == "video"
    # existing outputs need --force; the same seed gives the same split
    assert _split(json_file, image_root, tmp_path, "--seed", "3", "--split", "test=0.25") == 2
    assert _split(json_file, image_root, tmp_path, *fractions, "--seed", "3", "--force") == 0
    assert {s: json.load(open(tmp_path / f"train_{s}.json")) for s in splits} == parts


def test_frame_level_split_reports_near_duplicates(slow_videos, tmp_path, capsys):
    json_file, image_root = slow_videos
    novideo = _without_video_ids(json_file, tmp_path)
    capsys.readouterr()
    assert _split(novideo, image_root, tmp_path, "--group-by", "image", "--strict") == 1
    out = capsys.readouterr().out
    assert "Near-duplicate frames across splits" in out
    # every reported pair is two frames of one video: v<video>_f<frame>.png ~ v<video>_f<frame>.png
    pairs = [line.split("|")[-2].strip() for line in out.splitlines() if ".png ~ " in line]
    assert pairs and all(p[:4] == p.split(" ~ ")[1][:4] for p in pairs), pairs


def test_similarity_grouping_recovers_videos(slow_videos, tmp_path, capsys):
    json_file, image_root = slow_videos
    novideo = _without_video_ids(json_file, tmp_path)
    assert _split(novideo, image_root, tmp_path, "--strict") == 0  # auto: similarity without video ids
    assert "No near-duplicate frames across splits" in capsys.readouterr().out
    for s in ("train", "val"):
        part = json.load(open(tmp_path / f"novideo_{s}.json"))
        assert part["info"]["split"]["group_by"] == "similarity"
        videos = Counter(im["file_name"][:4] for im in part["images"])
        assert set(videos.values()) == {4}, videos  # whole videos only


def test_missing_images_and_video_ids_are_usage_errors(slow_videos, tmp_path, capsys):
    json_file, _ = slow_videos
    assert _split(json_file, str(tmp_path / "nowhere"), tmp_path) == 2
    assert "--image-root" in capsys.readouterr().err
    novideo = _without_video_ids(json_file, tmp_path)
    assert _split(novideo, str(tmp_path), tmp_path, "--group-by", "video", "--dup-threshold", "0") == 2
    assert "no video_id" in capsys.readouterr().err


def test_assign_groups_fills_every_split_and_is_seeded():
    sizes = {f"v{i}": 16 for i in range(10)}
    out = assign_groups(sizes, {"train": 0.8, "val": 0.2}, seed=0)
    assert Counter(out.values()) == {"train": 8, "val": 2}
    assert assign_groups(sizes, {"train": 0.8, "val": 0.2}, seed=0) == out
    assert any(assign_groups(sizes, {"train": 0.8, "val": 0.2}, seed=s) != out for s in range(1, 5))
    two = assign_groups({"a": 16, "b": 16}, {"train": 0.9, "val": 0.1}, seed=0)
    assert sorted(two.values()) == ["train", "val"]


def test_order_grouping_runs_in_natural_file_order():
    images = [{"file_name": f"f{i}.png"} for i in (10, 2, 1, 11)]
    assert group_frames(images, "order", chunk_size=2) == [("run", 1), ("run", 0), ("run", 0), ("run", 1)]
