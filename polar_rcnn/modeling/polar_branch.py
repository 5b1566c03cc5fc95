"""The polarization branch: stack -> per-FPN-level features of the FPN's width."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d


class PolarBranch(nn.Module):
    """``conv C->hidden`` (optionally on a downsampled stack), bilinear resize to each FPN level's
    exact size, then a per-level ``conv hidden->out``: the research notebook's design.

    With ``zero_init`` the per-level convs start at zero, so the branch outputs zeros and a fused
    detector starts exactly as the image-only one.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        level_names: List[str],
        pre_kernel_size: int = 3,
        post_kernel_size: int = 3,
        input_stride: int = 1,
        zero_init: bool = True,
    ):
        super().__init__()
        for name, k in (("pre_kernel_size", pre_kernel_size), ("post_kernel_size", post_kernel_size)):
            if k % 2 != 1:
                raise ValueError(f"MODEL.POLAR.{name.upper()} must be odd to keep sizes, got {k}")
        if input_stride < 1:
            raise ValueError(f"MODEL.POLAR.INPUT_STRIDE must be >= 1, got {input_stride}")
        self.in_channels = in_channels
        self.input_stride = input_stride
        self.level_names = list(level_names)
        self.pre = Conv2d(
            in_channels, hidden_channels, pre_kernel_size, padding=pre_kernel_size // 2,
            activation=F.relu,
        )
        nn.init.kaiming_normal_(self.pre.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.pre.bias)
        self.post = nn.ModuleDict(
            {
                name: Conv2d(hidden_channels, out_channels, post_kernel_size, padding=post_kernel_size // 2)
                for name in self.level_names
            }
        )
        for conv in self.post.values():
            if zero_init:
                nn.init.zeros_(conv.weight)
            else:
                nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(cls, cfg, level_names: List[str], out_channels: int):
        return {
            "in_channels": cfg.MODEL.POLAR.IN_CHANNELS,
            "hidden_channels": cfg.MODEL.POLAR.HIDDEN_CHANNELS,
            "out_channels": out_channels,
            "level_names": level_names,
            "pre_kernel_size": cfg.MODEL.POLAR.PRE_KERNEL_SIZE,
            "post_kernel_size": cfg.MODEL.POLAR.POST_KERNEL_SIZE,
            "input_stride": cfg.MODEL.POLAR.INPUT_STRIDE,
            "zero_init": cfg.MODEL.POLAR.ZERO_INIT,
        }

    def forward(self, stack: torch.Tensor, sizes: Dict[str, Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            stack: (N, C, H, W) normalized stack, padded like the image batch.
            sizes: level name -> (h, w) of that FPN level's feature map.
        Returns:
            level name -> (N, out_channels, h, w) polar features.
        """
        if stack.shape[1] != self.in_channels:
            raise ValueError(
                f"PolarBranch expects {self.in_channels} stack channels (MODEL.POLAR.IN_CHANNELS), "
                f"got a batch with {stack.shape[1]}"
            )
        if self.input_stride > 1:
            stack = F.avg_pool2d(stack, self.input_stride, ceil_mode=True)
        hidden = self.pre(stack)
        return {
            name: self.post[name](
                F.interpolate(hidden, size=tuple(sizes[name]), mode="bilinear", align_corners=False)
            )
            for name in self.level_names
        }
