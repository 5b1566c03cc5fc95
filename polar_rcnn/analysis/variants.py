"""The models the benchmarks compare: named config variants of one base config (vanilla
Detectron2 and the polar designs), built seeded with the trainer's freezing; parameter and fvcore
FLOP counts."""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Mapping, Optional, Sequence

import torch

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis

from ..engine.freezing import freeze_from_config
from ..engine.cli import setup_cfg


# ------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class ModelVariant:
    """A model to measure: config overrides (dotted keys) on top of the benchmark's config."""

    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


VANILLA = "vanilla"
_LIGHTEST = {"MODEL.POLAR.NUM_STAGES": 1, "MODEL.POLAR.PRE_KERNEL_SIZE": 1, "MODEL.POLAR.INPUT_STRIDE": 4}
_NOTEBOOK = {"MODEL.POLAR.HIDDEN_CHANNELS": 96, "MODEL.POLAR.PRE_KERNEL_SIZE": 3, "MODEL.POLAR.POST_KERNEL_SIZE": 3,
             "MODEL.POLAR.INPUT_STRIDE": 1}
VARIANTS: "OrderedDict[str, ModelVariant]" = OrderedDict(
    (v.name, v)
    for v in (
        ModelVariant(VANILLA, "vanilla Detectron2 (GeneralizedRCNN + build_resnet_fpn_backbone)",
                {"MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
                 "INPUT.STACK.ENABLED": False}),
        ModelVariant("default", "default"),  # the config's MODEL.POLAR: 2 stages, hidden 32, 1x1 then 3x3, INPUT_STRIDE 4
        ModelVariant("inject_both", "default, INJECT both", {"MODEL.POLAR.INJECT": "both"}),
        ModelVariant("concat", "default, FUSION concat", {"MODEL.POLAR.FUSION": "concat"}),
        ModelVariant("gate", "default, FUSION gate", {"MODEL.POLAR.FUSION": "gate"}),
        ModelVariant("channel_attention", "default, FUSION channel_attention",
                {"MODEL.POLAR.FUSION": "channel_attention"}),
        # the design steps from the research notebook's branch to the default
        ModelVariant("notebook", "notebook: hidden 96, 3x3 convs, INPUT_STRIDE 1", _NOTEBOOK),
        ModelVariant("notebook_stride4", "notebook at INPUT_STRIDE 4", {**_NOTEBOOK, "MODEL.POLAR.INPUT_STRIDE": 4}),
        ModelVariant("notebook_hidden32", "notebook with hidden 32", {**_NOTEBOOK, "MODEL.POLAR.HIDDEN_CHANNELS": 32}),
        ModelVariant("all_1x1", "default with 1x1 per-level convs", {"MODEL.POLAR.POST_KERNEL_SIZE": 1}),
        ModelVariant("one_stage", "1 stage, 3x3, INPUT_STRIDE 1", {**_NOTEBOOK, "MODEL.POLAR.NUM_STAGES": 1}),
        ModelVariant("lightest", "lightest: 1 stage, 1x1, INPUT_STRIDE 4", _LIGHTEST),
        ModelVariant("early", "early fusion (stem)", {"MODEL.BACKBONE.NAME": "build_early_fusion_resnet_fpn_backbone"}),
    )
)
POLAR_VARIANTS = OrderedDict((k, v) for k, v in VARIANTS.items() if k != VANILLA)


def get_variants(names: Iterable[str]) -> List[ModelVariant]:
    """The :data:`VARIANTS` called ``names`` (short names, or labels), vanilla first."""
    by_label = {v.label: v for v in VARIANTS.values()}
    out = []
    for name in names:
        variant = VARIANTS.get(name) or by_label.get(name)
        if variant is None:
            raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
        if variant not in out:
            out.append(variant)
    return sorted(out, key=lambda v: v.name != VANILLA)


def base_config(config_file: str, opts: Sequence[str] = (), *, depth: Optional[int] = None,
                channels: Optional[int] = None, device: str = "cpu") -> CfgNode:
    """``config_file`` + ``opts`` for measuring: no weights to download, ``device``, and optionally
    another ResNet ``depth`` (18/34 get RES2_OUT_CHANNELS 64) or stack ``channels``."""
    cfg = setup_cfg(config_file, opts, freeze=False)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if depth:
        cfg.MODEL.RESNETS.DEPTH = depth
        if depth in (18, 34):
            cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if channels:
        cfg.MODEL.POLAR.IN_CHANNELS = channels
    return cfg


def variant_config(base: CfgNode, overrides: Mapping[str, Any]) -> CfgNode:
    """A copy of ``base`` with ``overrides`` (dotted key -> value, set as given)."""
    cfg = base.clone()
    cfg.defrost()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        if leaf not in node:
            raise KeyError(f"unknown config key {key}")
        setattr(node, leaf, value)
    return cfg


def is_polar(cfg: CfgNode) -> bool:
    """Whether the configured model reads a stack (its backbone is not Detectron2's plain one)."""
    return cfg.MODEL.BACKBONE.NAME not in ("build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone")


def build_variant_model(cfg: CfgNode, vanilla_state: Optional[Mapping[str, torch.Tensor]] = None,
                        seed: int = 0) -> torch.nn.Module:
    """``build_model(cfg)`` (seeded) with ``MODEL.FREEZE`` applied like the trainer does; with
    ``vanilla_state`` the shared parameters are copied from the vanilla model."""
    torch.manual_seed(seed)
    model = freeze_from_config(cfg, build_model(cfg))
    if vanilla_state is not None:
        incompatible = model.load_state_dict(vanilla_state, strict=False)
        if incompatible.unexpected_keys:
            raise ValueError(f"the vanilla weights do not fit: unexpected keys {incompatible.unexpected_keys}")
    return model


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(module: torch.nn.Module, inputs) -> float:
    """fvcore FLOPs of ``module(inputs)`` (1 multiply-add = 1 flop; element-wise ops not counted)."""
    flops = FlopCountAnalysis(module, inputs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return float(flops.total())
