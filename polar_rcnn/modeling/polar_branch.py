"""The polarization branch: stack -> per-FPN-level features of the FPN's width."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm

NUM_STAGES_CHOICES = (1, 2)


class PolarBranch(nn.Module):
    """Turns the stack into one feature map per FPN level, each of that level's exact size.

    * two-stage (``num_stages=2``): ``conv C->hidden`` (+ optional
      norm) + ReLU, bilinear resize to each level, then a per-level ``conv hidden->out``
      (parameters ``pre`` and ``post.<level>``);
    * one-stage (``num_stages=1``): ``conv C->out`` (``pre``, no activation), bilinear resize to
      each level; no per-level conv.

    The first conv runs on the stack average-pooled by ``input_stride`` (or given pooled). With ``zero_init`` the last
    conv (``post`` convs, or ``pre`` for one-stage) starts at zero, so the branch outputs zeros and
    a fused detector starts exactly as the image-only one. With ``closed_gate`` each level's output
    is multiplied by a learned scalar (parameters ``gate.<level>``) that starts at zero: the
    branch's output is zero at the start too, its convs keep their random start and train once a
    gate opens, which only the gradient of the gate (one number per level) can do.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        level_names: List[str],
        num_stages: int = 2,
        pre_kernel_size: int = 3,
        post_kernel_size: int = 3,
        input_stride: int = 1,
        norm: str = "",
        zero_init: bool = True,
        closed_gate: bool = False,
    ):
        """
        Args:
            in_channels: channels of the stack.
            hidden_channels: output channels of the first conv (two-stage only).
            out_channels: channels of the returned features (the FPN's width).
            level_names: FPN levels to produce features for.
            num_stages: 2 (conv, resize, per-level conv) or 1 (conv, resize).
            pre_kernel_size, post_kernel_size: odd kernel sizes of the first / per-level convs.
            input_stride: the first conv runs on the stack average-pooled by this factor.
            norm: norm after the first conv of the two-stage branch ("" for none, "GN", ...; see
                :func:`detectron2.layers.get_norm`).
            zero_init: start the last conv at zero.
            closed_gate: multiply each level's output by a learned scalar that starts at zero
                (needs ``zero_init=False``: with both at zero no gradient would reach either).
        """
        super().__init__()
        if num_stages not in NUM_STAGES_CHOICES:
            raise ValueError(f"MODEL.POLAR.NUM_STAGES must be one of {NUM_STAGES_CHOICES}, got {num_stages}")
        for name, k in (("pre_kernel_size", pre_kernel_size), ("post_kernel_size", post_kernel_size)):
            if k < 1 or k % 2 != 1:
                raise ValueError(f"MODEL.POLAR.{name.upper()} must be odd to keep sizes, got {k}")
        if input_stride < 1:
            raise ValueError(f"MODEL.POLAR.INPUT_STRIDE must be >= 1, got {input_stride}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"PolarBranch needs positive channel counts, got in={in_channels}, out={out_channels}")
        if num_stages == 2 and hidden_channels < 1:
            raise ValueError(f"MODEL.POLAR.HIDDEN_CHANNELS must be >= 1 for NUM_STAGES 2, got {hidden_channels}")
        if num_stages == 1 and norm:
            raise ValueError(
                f"MODEL.POLAR.NORM ({norm!r}) follows the hidden conv of the two-stage branch; "
                "set MODEL.POLAR.NUM_STAGES: 2 or MODEL.POLAR.NORM: ''"
            )
        if norm == "GN" and hidden_channels % 32 != 0:
            raise ValueError(
                f"MODEL.POLAR.NORM 'GN' uses 32 groups: MODEL.POLAR.HIDDEN_CHANNELS ({hidden_channels}) "
                "must be a multiple of 32"
            )
        if closed_gate and zero_init:
            raise ValueError(
                "MODEL.POLAR.CLOSED_GATE starts the branch's output at zero already; with MODEL.POLAR.ZERO_INIT too "
                "neither the gates nor the last conv would ever get a gradient: set MODEL.POLAR.ZERO_INIT: False"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_stages = num_stages
        self.input_stride = input_stride
        self.level_names = list(level_names)
        self.gate = (nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in self.level_names})
                     if closed_gate else None)

        if num_stages == 1:
            self.pre = Conv2d(in_channels, out_channels, pre_kernel_size, padding=pre_kernel_size // 2)
            _init_last(self.pre, zero_init)
            return
        self.pre = Conv2d(
            in_channels, hidden_channels, pre_kernel_size, padding=pre_kernel_size // 2,
            bias=not norm, norm=get_norm(norm, hidden_channels), activation=F.relu,
        )
        nn.init.kaiming_normal_(self.pre.weight, mode="fan_out", nonlinearity="relu")
        if self.pre.bias is not None:
            nn.init.zeros_(self.pre.bias)
        self.post = nn.ModuleDict(
            {
                name: Conv2d(hidden_channels, out_channels, post_kernel_size, padding=post_kernel_size // 2)
                for name in self.level_names
            }
        )
        for conv in self.post.values():
            _init_last(conv, zero_init)

    @classmethod
    def from_config(cls, cfg, level_names: List[str], out_channels: int):
        return {
            "in_channels": cfg.MODEL.POLAR.IN_CHANNELS,
            "hidden_channels": cfg.MODEL.POLAR.HIDDEN_CHANNELS,
            "out_channels": out_channels,
            "level_names": level_names,
            "num_stages": cfg.MODEL.POLAR.NUM_STAGES,
            "pre_kernel_size": cfg.MODEL.POLAR.PRE_KERNEL_SIZE,
            "post_kernel_size": cfg.MODEL.POLAR.POST_KERNEL_SIZE,
            "input_stride": cfg.MODEL.POLAR.INPUT_STRIDE,
            "norm": cfg.MODEL.POLAR.NORM,
            "zero_init": cfg.MODEL.POLAR.ZERO_INIT,
            "closed_gate": cfg.MODEL.POLAR.CLOSED_GATE,
        }

    def forward(self, stack: torch.Tensor, sizes: Dict[str, Tuple[int, int]],
                pooled: bool = False) -> Dict[str, torch.Tensor]:
        """
        Args:
            stack: (N, C, H, W) normalized stack, padded like the image batch, or with ``pooled``
                already average-pooled by ``input_stride`` (N, C, H/s, W/s).
            sizes: level name -> (h, w) of that FPN level's feature map.
            pooled: the stack is already on the ``input_stride`` grid.
        Returns:
            level name -> (N, out_channels, h, w) polar features.
        """
        if stack.shape[1] != self.in_channels:
            raise ValueError(
                f"PolarBranch expects {self.in_channels} stack channels (MODEL.POLAR.IN_CHANNELS), "
                f"got a batch with {stack.shape[1]}"
            )
        if self.input_stride > 1 and not pooled:
            stack = F.avg_pool2d(stack, self.input_stride, ceil_mode=True)
        if self.num_stages == 1 and self.pre.kernel_size == (1, 1):
            # a 1x1 conv commutes with the bilinear resize: resize the C-channel input (no gradient
            # needed) instead of the FPN-wide output, whose resize backward zero-fills full buffers
            return self._gated({name: self.pre(_resize(stack, tuple(sizes[name]))) for name in self.level_names})
        hidden = self.pre(stack)
        out = {}
        for name in self.level_names:
            resized = _resize(hidden, tuple(sizes[name]))
            out[name] = resized if self.num_stages == 1 else self.post[name](resized)
        return self._gated(out)

    def _gated(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``out`` times each level's gate (``closed_gate``), else ``out``."""
        if self.gate is None:
            return out
        return {name: x * self.gate[name].to(x.dtype) for name, x in out.items()}


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``; a same-size resize is the identity and is skipped (e.g. P2 at
    INPUT_STRIDE 4)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _init_last(conv: nn.Conv2d, zero_init: bool) -> None:
    """Initialise a conv that produces the branch's output: zeros, or Kaiming-uniform."""
    if zero_init:
        nn.init.zeros_(conv.weight)
    else:
        nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
