"""tools/predict.py: COCO results that pycocotools loads, with the dataset's image and category ids;
image files with and without a stack."""
import json
import os

import cv2
import pytest
from tests.tools.eval_tool_utils import DEMO_CONFIG, tiny_opts
from pycocotools.coco import COCO

from polar_rcnn.evaluation import PictureMaker, check_stack_source, load_inputs, records_from_files
from polar_rcnn.engine.cli import setup_cfg
from polar_rcnn.evaluation.visualization import GAP
from tools import predict

CATEGORY_OFFSET, IMAGE_OFFSET = 10, 100  # dataset ids that are not the contiguous 0..K-1 / 1..N


def _renumbered(json_file):
    with open(json_file) as f:
        coco = json.load(f)
    for c in coco["categories"]:
        c["id"] += CATEGORY_OFFSET
    for a in coco["annotations"]:
        a["category_id"] += CATEGORY_OFFSET
        a["image_id"] += IMAGE_OFFSET
    for i in coco["images"]:
        i["id"] += IMAGE_OFFSET
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return {c["id"] for c in coco["categories"]}, {i["id"] for i in coco["images"]}


def test_dataset_results_load_with_pycocotools(tiny_copy, register, tmp_path, capsys):
    root, json_file = tiny_copy
    category_ids, image_ids = _renumbered(json_file)
    name = register(root, json_file)
    out = tmp_path / "pred"
    assert predict.main(["--config-file", DEMO_CONFIG, "--dataset", name, "--output", str(out),
                         "--num-pictures", "2", *tiny_opts()]) == 0
    results_file = out / "coco_results.json"
    results = json.loads(results_file.read_text())
    assert results, "the untrained model keeps detections above SCORE_THRESH_TEST"
    assert {r["category_id"] for r in results} <= category_ids
    assert {r["image_id"] for r in results} <= image_ids
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and 0 <= r["score"] <= 1 for r in results)
    detections = COCO(json_file).loadRes(str(results_file))
    assert len(detections.getAnnIds()) == len(results)
    assert len([p for p in os.listdir(out / "pictures") if p.endswith(".png")]) == 3  # 2 + grid
    assert "results:" in capsys.readouterr().out


def test_files_with_a_missing_stack(tiny_copy, tmp_path):
    root, json_file = tiny_copy
    stacks = os.path.join(root, "train", "stacks")
    os.remove(os.path.join(stacks, "v001_f0002.npy"))
    out = tmp_path / "files"
    pattern = os.path.join(root, "train", "images", "*.png")
    assert predict.main(["--config-file", DEMO_CONFIG, "--input", pattern, "--stacks", stacks, "--output", str(out),
                         "--num-pictures", "0", *tiny_opts()]) == 0
    images = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in images] == list(range(1, 13))
    assert [os.path.basename(i["file_name"]) for i in images if i["stack_file"] is None] == ["v001_f0002.png"]
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 13))
    assert not (out / "pictures").exists()


def test_predictor_accepts_a_missing_stack(tiny_split):
    root, json_file = tiny_split
    cfg = setup_cfg(DEMO_CONFIG, tiny_opts() + ["MODEL.POLAR.ZERO_INIT", "False"])
    (record,) = records_from_files([os.path.join(root, "train", "images", "v000_f0000.png")],
                                   os.path.join(root, "train", "stacks"))
    image, stack = load_inputs(cfg, record)
    assert stack is not None and stack.shape == (48, 64, 4)
    maker = PictureMaker(cfg, topk=5)
    with_stack, proposals = maker.predict(image, stack)
    without_stack, _ = maker.predict(image, None)
    assert len(proposals) > 0 and proposals.image_size == (48, 64)
    scores = proposals.objectness_logits
    assert (scores[:-1] >= scores[1:]).all()  # sorted: the first k are the top-k
    # a randomly initialised branch (ZERO_INIT False): the stack changes the detections
    a, b = with_stack["instances"], without_stack["instances"]
    assert len(a) != len(b) or not (a.scores == b.scores).all()
    picture = maker.picture({"file_name": "x.png"}, image, None, without_stack, None)
    assert picture.shape[1] == 64  # detections only: no proposals given, no stack
    assert cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).std() > 0


def _files(root):
    return os.path.join(root, "train", "images", "v000_f000[01].png")


def test_a_stack_model_without_stacks_needs_rgb_only(tiny_split, tmp_path, capsys):
    root, _ = tiny_split
    out = tmp_path / "pred"
    args = ["--config-file", DEMO_CONFIG, "--input", _files(root), "--output", str(out), "--num-pictures", "0"]
    assert predict.main([*args, *tiny_opts()]) == 2
    assert "--rgb-only" in capsys.readouterr().err and not out.exists()
    assert predict.main([*args, "--rgb-only", *tiny_opts()]) == 0
    images = json.loads((out / "images.json").read_text())
    assert len(images) == 2 and all(i["stack_file"] is None for i in images)


def test_stacks_folder_that_does_not_exist(tiny_split, tmp_path, capsys):
    root, _ = tiny_split
    missing = str(tmp_path / "no_such_stacks")
    assert predict.main(["--config-file", DEMO_CONFIG, "--input", _files(root), "--stacks", missing,
                         "--output", str(tmp_path / "pred"), "--num-pictures", "0", *tiny_opts()]) == 2
    assert missing in capsys.readouterr().err


def test_rgb_only_with_a_dataset_drops_its_stacks(tiny_split, register, tmp_path):
    root, json_file = tiny_split
    name = register(root, json_file)
    out = tmp_path / "pred"
    assert predict.main(["--config-file", DEMO_CONFIG, "--dataset", name, "--rgb-only", "--output", str(out),
                         "--num-pictures", "1", *tiny_opts()]) == 0
    # ground truth | RPN | detections: no DoLP / AoLP views without a stack
    assert cv2.imread(str(out / "pictures" / "v000_f0000.png")).shape[1] == 3 * 64 + 2 * GAP


def test_stack_source_rules():
    cfg = setup_cfg(DEMO_CONFIG, tiny_opts(), freeze=False)
    check_stack_source(cfg, "stacks", rgb_only=False)
    check_stack_source(cfg, "", rgb_only=True)
    with pytest.raises(ValueError, match="INPUT.STACK.ENABLED"):
        check_stack_source(cfg, "", rgb_only=False)
    with pytest.raises(ValueError, match="exclude each other"):
        check_stack_source(cfg, "stacks", rgb_only=True)
    cfg.INPUT.STACK.ENABLED = False  # an RGB model: image files alone are what it reads
    check_stack_source(cfg, "", rgb_only=False)


def test_side_by_side_pictures_show_every_models_detections_then_the_stack(tiny_split, register, tmp_path):
    from detectron2.data import DatasetCatalog

    from polar_rcnn.evaluation import comparison_picture, write_comparison_pictures

    root, json_file = tiny_split
    name = register(root, json_file)
    rgb_config = DEMO_CONFIG.replace("demo_polar_synth", "demo_rgb_only_polar_synth")
    makers = {"RGB only": PictureMaker(setup_cfg(rgb_config, tiny_opts(name, root, json_file)), topk=0),
              "polar": PictureMaker(setup_cfg(DEMO_CONFIG, tiny_opts(name, root, json_file)
                                              + ["MODEL.POLAR.ZERO_INIT", "False"]), topk=0)}
    records = DatasetCatalog.get(name)
    picture = comparison_picture(makers, records[0])
    # ground truth | RGB-only detections | polar detections | DoLP | AoLP
    assert picture.shape[1] == 5 * 64 + 4 * GAP
    alone = makers["polar"](records[0])[0]  # ground truth | detections | DoLP | AoLP of the polar model
    assert alone.shape[1] == 4 * 64 + 3 * GAP
    # the polar model's panel and the stack views are those it draws alone (same image, same model)
    below_captions, last_three = slice(-alone.shape[0] + 40, None), slice(-(3 * 64 + 2 * GAP), None)
    assert (picture[below_captions, last_three] == alone[below_captions, last_three]).all()
    paths, grid = write_comparison_pictures(makers, records, str(tmp_path / "side"), num_images=2)
    assert len(paths) == 2 and all(os.path.isfile(p) for p in paths) and os.path.isfile(grid)
    assert cv2.imread(paths[0]).shape[1] == picture.shape[1]
