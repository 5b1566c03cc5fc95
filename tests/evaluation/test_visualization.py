"""Drawing: DoLP / AoLP views carry the stack's polarization; panels, rows and grids have the stated sizes."""
import numpy as np
import pytest
import torch

from detectron2.structures import Boxes, Instances

from polar_rcnn.data.polar_layout import PolarLayout
from polar_rcnn.data.synthetic import malus_stack
from polar_rcnn.evaluation import visualization as vis
from polar_rcnn.evaluation.visualization import GAP

H, W = 24, 32


def _polar_stack(dolp_left, aolp_left_deg, dolp_right, aolp_right_deg, bands=2):
    """Left half and right half with different polarization, as 0/45/90/135 images per band."""
    dolp = np.full((H, W), dolp_left, np.float32)
    aolp = np.full((H, W), np.deg2rad(aolp_left_deg), np.float32)
    dolp[:, W // 2:] = dolp_right
    aolp[:, W // 2:] = np.deg2rad(aolp_right_deg)
    s0 = np.full((H, W, bands), 0.8, np.float32)
    return malus_stack(s0, dolp, aolp)


def test_dolp_grey_and_aolp_hue_show_the_stack_polarization():
    stack = _polar_stack(0.2, 0.0, 0.8, 60.0)
    panels = vis.stack_panels(stack, PolarLayout("angles", channels=stack.shape[2]))
    assert [name for name, _ in panels] == ["DoLP", "AoLP hue, DoLP value"]
    dolp, aolp = panels[0][1], panels[1][1]
    assert dolp.shape == aolp.shape == (H, W, 3) and dolp.dtype == np.uint8
    # grey: R = G = B = DoLP * 255
    assert (dolp[..., 0] == dolp[..., 1]).all() and (dolp[..., 1] == dolp[..., 2]).all()
    assert abs(int(dolp[0, 0, 0]) - 51) <= 2 and abs(int(dolp[0, -1, 0]) - 204) <= 2
    # hue: AoLP 0 deg is red, 60 deg is green
    assert np.argmax(aolp[0, 0]) == 0 and np.argmax(aolp[0, -1]) == 1
    # value: DoLP relative to its 99th percentile (0.8): the less polarized half is darker
    assert aolp[0, -1].max() >= 250 and abs(int(aolp[0, 0].max()) - 64) <= 3


def test_unpolarized_noise_stays_dark_in_the_aolp_view():
    rng = np.random.default_rng(0)
    aolp = rng.uniform(0, np.pi, (H, W)).astype(np.float32)  # the angle of unpolarized light is noise
    dolp = np.full((H, W), 0.01, np.float32)
    dolp[:4, :4] = 0.6  # one polarized patch
    view = vis.aolp_panel(aolp, dolp)
    assert view[4:, 4:].max() <= 10 and view[:4, :4].max(axis=2).min() >= 250
    assert vis.aolp_panel(aolp).max(axis=2).min() >= 250  # without DoLP: full brightness


def test_stokes_layout_gives_the_same_views_as_angles():
    stack = _polar_stack(0.5, 120.0, 0.3, 30.0, bands=1)
    i0, i45, i90, i135 = np.moveaxis(stack, -1, 0)
    stokes = np.stack([0.5 * (i0 + i45 + i90 + i135), i0 - i90, i45 - i135], axis=-1)
    from_angles = vis.polarization_maps(stack, PolarLayout("angles", channels=4))
    from_stokes = vis.polarization_maps(stokes, PolarLayout("stokes", channels=3))
    for a, b in zip(from_angles, from_stokes):
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(from_angles[1][0, 0], np.deg2rad(120.0), atol=1e-3)


def test_channels_view_for_stacks_without_polarization():
    rng = np.random.default_rng(0)
    stack = rng.random((H, W, 5)).astype(np.float32)
    ((name, view),) = vis.stack_panels(stack, PolarLayout("", channels=5), channels=[4])
    assert name == "stack ch 4" and view.shape == (H, W, 3)
    assert (view[..., 0] == view[..., 2]).all()  # one channel: grey
    # the 1st..99th percentile stretch maps the channel's order monotonically
    order = np.argsort(stack[..., 4].ravel())
    assert (np.diff(view[..., 0].ravel()[order].astype(int)) >= 0).all()
    ((_, rgb),) = vis.stack_panels(stack, PolarLayout("", channels=5))
    assert not (rgb[..., 0] == rgb[..., 1]).all()  # default: three channels as R, G, B
    with pytest.raises(ValueError, match="do not exist"):
        vis.channels_panel(stack, [0, 1, 7])
    with pytest.raises(ValueError, match="1 or 3"):
        vis.channels_panel(stack, [0, 1])


def test_rows_and_grids_have_the_stated_sizes():
    image = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[2, 2, 10, 12], [5, 5, 20, 20]], np.float32)
    inst = Instances((H, W), pred_boxes=Boxes(torch.tensor(boxes)), scores=torch.tensor([0.9, 0.2]),
                     pred_classes=torch.tensor([0, 1]))
    panels = [("gt", vis.ground_truth_panel(image, [])), ("rpn", vis.proposals_panel(image, boxes)),
              ("det", vis.detections_panel(image, inst, score_threshold=0.5))]
    assert all(p.shape == (H, W, 3) for _, p in panels)
    assert (panels[1][1] != 0).any()  # boxes were drawn
    row = vis.compose_row(panels, caption_height=10, gap=3)
    assert row.shape == (10 + H, 3 * W + 2 * 3, 3)
    small = vis.compose_row(panels[:1], caption_height=0)
    grid = vis.image_grid([row, small], gap=5)
    assert grid.shape == (row.shape[0] + small.shape[0] + 5, row.shape[1], 3)
    assert (grid[row.shape[0] + 5:, W:] == 255).all()  # the shorter row is padded with white


def _ink(strip):
    """Columns of an RGB strip that hold something other than white."""
    return np.flatnonzero((strip < 255).any(axis=(0, 2)))


@pytest.mark.parametrize("width", [64, 128, 800])
def test_captions_and_title_fit_their_panels_at_any_size(width):
    image = np.zeros((width * 3 // 4, width, 3), np.uint8)
    captions = ["ground truth", "detections >= 0.5 (12)", "AoLP hue, DoLP value"]
    row = vis.compose_row([(c, image) for c in captions])
    h = image.shape[0]
    assert row.shape[1] == 3 * width + 2 * GAP
    top = row.shape[0] - h
    for i in range(3):
        x = i * (width + GAP)
        columns = _ink(row[:top, x : x + width])
        assert len(columns), captions[i]
        assert columns.max() < width - 1  # no caption reaches its panel's right edge
        if i:
            assert (row[:top, x - GAP : x] == 255).all()  # nor runs into the gap before this panel
        assert (row[top:, x : x + width] == 0).all()  # the panels themselves untouched
    named = vis.compose_row([(c, image) for c in captions], title="cam0_frame_000123.png")
    assert named.shape[0] > row.shape[0] and (named[-row.shape[0]:] == row).all()  # a line above the captions
    title = named[: named.shape[0] - row.shape[0]]
    assert len(_ink(title)) and _ink(title).max() < named.shape[1] - 1


def test_fixed_caption_height_shrinks_the_text():
    image = np.zeros((24, 32, 3), np.uint8)
    row = vis.compose_row([("detections >= 0.5 (12)", image)], caption_height=10)
    assert row.shape == (34, 32, 3)
    assert len(_ink(row[:10])) and _ink(row[:10]).max() < 31


def test_class_colours_are_fixed_and_shared_by_ground_truth_and_detections():
    from detectron2.data import MetadataCatalog

    image = np.zeros((64, 64, 3), np.uint8)
    box = [8.0, 8.0, 40.0, 40.0]
    gt = vis.ground_truth_panel(image, [{"bbox": box, "bbox_mode": 0, "category_id": 2}])
    inst = Instances((64, 64), pred_boxes=Boxes(torch.tensor([box])), scores=torch.tensor([0.9]),
                     pred_classes=torch.tensor([2]))
    det = vis.detections_panel(image, inst)
    edge = (20, 8)  # a pixel of the left edge, away from the label
    assert (gt[edge] > 0).any() and (gt[edge] == det[edge]).all()
    assert (vis.ground_truth_panel(image, [{"bbox": box, "bbox_mode": 0, "category_id": 2}]) == gt).all()
    assert vis.class_color(2) == vis.class_color(2) != vis.class_color(1)
    meta = MetadataCatalog.get("_vis_test_colours")
    meta.thing_colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    try:
        assert vis.class_color(2, meta) == (0.0, 0.0, 1.0)
        blue = vis.ground_truth_panel(image, [{"bbox": box, "bbox_mode": 0, "category_id": 2}], meta)
        assert np.argmax(blue[edge]) == 2
    finally:
        MetadataCatalog.remove("_vis_test_colours")


def test_the_best_detections_when_none_reaches_the_threshold():
    inst = Instances((H, W), pred_boxes=Boxes(torch.tensor([[0.0, 0, 5, 5]] * 3)),
                     scores=torch.tensor([0.2, 0.1, 0.4]), pred_classes=torch.tensor([0, 1, 2]))
    shown, below = vis.shown_detections(inst, 0.5, min_shown=2)
    assert below and shown.scores.tolist() == pytest.approx([0.4, 0.2])
    shown, below = vis.shown_detections(inst, 0.15, min_shown=2)
    assert not below and sorted(shown.scores.tolist()) == pytest.approx([0.2, 0.4])
    shown, below = vis.shown_detections(inst, 0.5)
    assert not below and len(shown) == 0


def test_masks_are_filled_in_detections_and_ground_truth():
    """pred_masks (Mask R-CNN) and polygon segmentations are drawn: inside the mask, outside the box's
    outline, the picture differs from the one without masks; far from the object it does not."""
    image = np.full((64, 80, 3), 128, np.uint8)
    inst = Instances((64, 80))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([1])
    plain = vis.detections_panel(image, inst).astype(int)
    mask = torch.zeros(1, 64, 80, dtype=torch.bool)
    mask[0, 20:40, 20:40] = True
    inst.pred_masks = mask
    masked = vis.detections_panel(image, inst).astype(int)
    changed = np.abs(masked - plain).sum(axis=2) > 0
    assert changed[25:35, 25:35].all()
    assert not changed[55:, 60:].any()
    anns = [{"bbox": [10, 10, 40, 40], "category_id": 1}]
    gt_plain = vis.ground_truth_panel(image, anns).astype(int)
    anns[0]["segmentation"] = [[20, 20, 40, 20, 40, 40, 20, 40]]
    gt_masked = vis.ground_truth_panel(image, anns).astype(int)
    assert (np.abs(gt_masked - gt_plain).sum(axis=2) > 0)[25:35, 25:35].all()
