"""tools/robustness.py's faults: a stack shifted against its image, missing stacks, sensor noise."""
import pytest
import torch

from polar_rcnn.evaluation.robustness import PerturbedMapper, StackPerturbation, shift_with_edge


def test_shift_moves_the_content_and_repeats_the_edge():
    stack = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    out = shift_with_edge(stack, (0, 2))
    assert torch.equal(out[:, :, 2:], stack[:, :, :3])  # content moved right by 2
    assert torch.equal(out[:, :, 0], stack[:, :, 0]) and torch.equal(out[:, :, 1], stack[:, :, 0])
    up = shift_with_edge(stack, (-1, 0))
    assert torch.equal(up[:, :2], stack[:, 1:]) and torch.equal(up[:, 2], stack[:, 2])
    assert torch.equal(shift_with_edge(stack, (0, 0)), stack)


def _input(image_id=7, dtype=torch.uint16, scale=1 / 65535):
    stack = torch.full((4, 6, 8), 1000, dtype=dtype)
    return {"image": torch.zeros(3, 6, 8), "stack": stack, "stack_scale": scale, "image_id": image_id}


def test_noise_is_added_to_the_float_values_seeded_per_image():
    p = StackPerturbation(noise_std=0.01, seed=3)
    a, b, other = p.apply(_input()), p.apply(_input()), p.apply(_input(image_id=8))
    assert a["stack"].dtype == torch.float32 and a["stack_scale"] == 1.0
    assert torch.equal(a["stack"], b["stack"]) and not torch.equal(a["stack"], other["stack"])
    noise = a["stack"] - 1000 / 65535
    assert abs(noise.mean().item()) < 0.003 and noise.std().item() == pytest.approx(0.01, rel=0.2)
    original = _input()
    p.apply(original)
    assert original["stack"].dtype == torch.uint16  # the mapper's output is not modified


def test_missing_stacks_are_a_seeded_fraction_of_the_dataset():
    p = StackPerturbation(missing=0.25, seed=1)
    ids = list(range(40))
    chosen = p.missing_ids(ids)
    assert len(chosen) == 10 and chosen == p.missing_ids(reversed(ids)) != StackPerturbation(
        missing=0.25, seed=2).missing_ids(ids)
    mapper = PerturbedMapper(lambda record: _input(record["image_id"]), p, ids)
    outputs = [mapper({"image_id": i}) for i in ids]
    assert {i for i, x in zip(ids, outputs) if "stack" not in x} == chosen
    assert all("stack_scale" not in x for x in outputs if "stack" not in x)
    assert StackPerturbation(missing=1.0).missing_ids(ids) == set(ids) and not StackPerturbation().missing_ids(ids)


def test_stacks_on_the_grid_are_refused_and_bad_settings_raise():
    grid = dict(_input(), stack_stride=4)
    with pytest.raises(ValueError, match="RESOLUTION full"):
        StackPerturbation(shift=(0, 1)).apply(grid)
    with pytest.raises(ValueError, match="missing"):
        StackPerturbation(missing=1.5)
    with pytest.raises(ValueError, match="noise_std"):
        StackPerturbation(noise_std=-1.0)
    assert StackPerturbation(shift=(0, 2), missing=0.5, noise_std=0.02).name == "shift 0,2 px, missing 0.5, noise 0.02"
