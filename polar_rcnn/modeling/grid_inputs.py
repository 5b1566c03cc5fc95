"""The stack on the branch's stride-s grid inside the model's input tensor.

A backbone whose branch reads the stack at ``MODEL.POLAR.INPUT_STRIDE`` s > 1 gets the image at
full resolution and, after it, the stride-s grid of ``[normalized stack, availability]`` packed
into ceil((C + 1) / s^2) full-resolution channels (``pixel_shuffle`` of the grid, channels padded
with zeros): one tensor, as Detectron2's meta-architectures hand the backbone, s^2 times smaller
than the stack at full resolution.
"""
import torch
import torch.nn.functional as F


def packed_channels(grid_channels: int, stride: int) -> int:
    """Full-resolution channels that hold a ``grid_channels`` grid at ``stride``."""
    return -(-grid_channels // (stride * stride))


def pack_grid(grid: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, C, h, w) grid -> (N, packed_channels(C, s), h*s, w*s); zero channels pad C."""
    n, c, h, w = grid.shape
    padding = packed_channels(c, stride) * stride * stride - c
    if padding:
        grid = torch.cat([grid, grid.new_zeros((n, padding, h, w))], dim=1)
    return F.pixel_shuffle(grid, stride)


def unpack_grid(packed: torch.Tensor, grid_channels: int, stride: int) -> torch.Tensor:
    """Inverse of :func:`pack_grid`: (N, P, H, W) -> (N, grid_channels, H/s, W/s)."""
    return F.pixel_unshuffle(packed, stride)[:, :grid_channels]


__all__ = ["pack_grid", "packed_channels", "unpack_grid"]
