"""Freezing named parts of a detector (``MODEL.FREEZE``): part aliases, name patterns,
FrozenBatchNorm2d and eval mode for frozen modules, and a per-part parameter table.

A part is selected by an alias (:data:`PART_ALIASES`), a glob over parameter or module names
(``"roi_heads.box_head.fc1"``, ``"backbone.bottom_up.res[45]*"``) or ``"re:<regex>"``. A pattern
selects a parameter when it matches the parameter's name or the name of a module containing it.

Freezing sets ``requires_grad=False`` (so Detectron2's ``build_optimizer`` never sees the
parameters), converts BatchNorm layers of fully frozen modules to :class:`FrozenBatchNorm2d` and
keeps their layers (modules without children) in eval mode, also through ``model.train()``. The
frozen heads themselves follow ``model.train()``, so that they still compute their losses.
"""
import fnmatch
import logging
import re
import types
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Sequence, Set, Tuple

from tabulate import tabulate
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import ResNet

logger = logging.getLogger(__name__)

_POLAR_PREFIXES = ("polar", "fusion", "stack")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_polar(name: str) -> bool:
    # the polar branch and the fusion modules, wherever they sit (backbone.polar_branch, backbone.fusion...)
    return any(part.startswith(_POLAR_PREFIXES) for part in name.split("."))


def _is_image_bottom_up(name: str) -> bool:
    return _under(name, "backbone.bottom_up") and not _is_polar(name)


def _is_fpn(name: str) -> bool:
    fpn = name.startswith(("backbone.fpn_lateral", "backbone.fpn_output")) or _under(name, "backbone.top_block")
    return fpn and not _is_polar(name)


#: alias -> (what it selects, predicate over parameter / state-dict names). Order = table order;
#: the first alias that matches a name owns it in the table.
PART_ALIASES: "OrderedDict[str, Tuple[str, Callable[[str], bool]]]" = OrderedDict(
    [
        ("image_bottom_up", ("backbone.bottom_up.* (the image ResNet)", _is_image_bottom_up)),
        ("fpn", ("backbone.fpn_lateral*, backbone.fpn_output*, backbone.top_block.*", _is_fpn)),
        ("polar_branch", ("every module named polar*/fusion*/stack* (backbone.polar_branch.*, fusions)", _is_polar)),
        ("rpn", ("proposal_generator.*", lambda n: _under(n, "proposal_generator"))),
        ("box_head", ("roi_heads.box_head.*", lambda n: _under(n, "roi_heads.box_head"))),
        ("box_predictor", ("roi_heads.box_predictor.*", lambda n: _under(n, "roi_heads.box_predictor"))),
        ("mask_head", ("roi_heads.mask_head.*", lambda n: _under(n, "roi_heads.mask_head"))),
        ("retinanet_head", ("head.* (RetinaNet)", lambda n: _under(n, "head"))),
    ]
)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def part_of(name: str) -> str:
    """The alias that owns a parameter / state-dict name, or ``"other (<first components>)"``."""
    for alias, (_, matches) in PART_ALIASES.items():
        if matches(name):
            return alias
    return "other ({})".format(".".join(name.split(".")[:2]))


def _pattern_matcher(entry: str, key: str) -> Callable[[str], bool]:
    if entry.startswith("re:"):
        try:
            regex = re.compile(entry[3:])
        except re.error as e:
            raise ValueError(f"{key}: {entry!r} is not a valid regular expression: {e}") from e
        match_one = lambda s: regex.fullmatch(s) is not None  # noqa: E731
    else:
        match_one = lambda s: fnmatch.fnmatchcase(s, entry)  # noqa: E731

    def matches(name: str) -> bool:
        parts = name.split(".")
        return any(match_one(".".join(parts[:k])) for k in range(1, len(parts) + 1))

    return matches


def select_parameters(model: nn.Module, parts: Sequence[str], key: str = "MODEL.FREEZE.PARTS") -> List[str]:
    """Names of the parameters of ``model`` that ``parts`` (aliases or patterns) select.

    Raises:
        ValueError: naming ``key``, for an entry that selects no parameter.
    """
    names = [n for n, _ in unwrap(model).named_parameters()]
    selected: Set[str] = set()
    for entry in parts:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{key}: entries must be non-empty strings, got {entry!r}")
        if entry in PART_ALIASES:
            description, matches = PART_ALIASES[entry]
        else:
            description, matches = None, _pattern_matcher(entry, key)
        hits = [n for n in names if matches(n)]
        if not hits:
            model_name = type(unwrap(model)).__name__
            if description is not None:
                raise ValueError(f"{key}: part {entry!r} ({description}) matches no parameter of this {model_name}")
            raise ValueError(
                f"{key}: {entry!r} is neither a known part ({', '.join(PART_ALIASES)}) nor a pattern "
                f"matching a parameter or module name of this {model_name}; use e.g. "
                "'roi_heads.box_head.*' (glob) or 're:roi_heads\\.box_head\\.fc[12]' (regex)"
            )
        selected.update(hits)
    return [n for n in names if n in selected]


def freeze_at_prefixes(model: nn.Module, freeze_at: int) -> List[str]:
    """Module names that ``MODEL.BACKBONE.FREEZE_AT`` freezes in every Detectron2 ResNet of ``model``
    (stem at >= 1, res2 at >= 2, ...); unfreezing leaves their image parameters frozen."""
    prefixes = []
    for name, module in unwrap(model).named_modules():
        if isinstance(module, ResNet):
            base = name + "." if name else ""
            if freeze_at >= 1:
                prefixes.append(base + "stem")
            prefixes += [base + s for idx, s in enumerate(module.stage_names, start=2) if freeze_at >= idx]
    return prefixes


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a layer of a frozen part: it stays in eval mode."""
    return nn.Module.train(self, False)


def is_kept_in_eval(module: nn.Module) -> bool:
    """Whether ``module`` is a layer of a frozen part that ignores ``train()``."""
    return "train" in vars(module)


def _sync_frozen_modules(model: nn.Module) -> None:
    """In every frozen part (top-most non-root module whose >= 1 parameters are all frozen),
    BatchNorm becomes FrozenBatchNorm2d and the layers (modules without children: norms, dropout,
    convs) stay in eval mode. The part itself follows ``model.train()``: Detectron2's RPN and ROI
    heads compute their losses only in training mode, and a trainable branch needs those losses."""
    roots: List[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(r + ".") for r in roots):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            roots.append(name)
    for name in roots:
        module = model.get_submodule(name)
        converted = FrozenBatchNorm2d.convert_frozen_batchnorm(module)
        if converted is not module:  # the frozen part is a BatchNorm itself
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, converted)
    frozen_layers = {
        id(m) for r in roots for m in model.get_submodule(r).modules() if next(m.children(), None) is None
    }
    for module in model.modules():
        if id(module) in frozen_layers:
            if not is_kept_in_eval(module):
                module.train = types.MethodType(_stay_in_eval, module)
            nn.Module.train(module, False)
        elif is_kept_in_eval(module):  # trains again
            del module.train
            module.train(model.training)


def freeze_parameters(model: nn.Module, names: Iterable[str]) -> None:
    """Freeze the named parameters; see the module docstring for BatchNorm and eval mode."""
    model = unwrap(model)
    names = set(names)
    for n, p in model.named_parameters():
        if n in names:
            p.requires_grad_(False)
    _sync_frozen_modules(model)


def unfreeze_parameters(model: nn.Module, names: Iterable[str]) -> List[nn.Parameter]:
    """Let the named parameters train again and return them. FrozenBatchNorm2d layers stay frozen
    (their statistics and affine are buffers); the modules around them follow ``model.train()``."""
    model = unwrap(model)
    names = set(names)
    params = [p for n, p in model.named_parameters() if n in names]
    for p in params:
        p.requires_grad_(True)
    _sync_frozen_modules(model)
    return params


def select_unfreeze_parameters(model: nn.Module, parts: Sequence[str], freeze_at: int = 0) -> List[str]:
    """Frozen parameters that ``MODEL.FREEZE.UNFREEZE_PARTS`` entries ``parts`` select, without those
    that ``MODEL.BACKBONE.FREEZE_AT`` (``freeze_at``) keeps frozen.

    Raises:
        ValueError: for an entry that selects no such parameter.
    """
    key = "MODEL.FREEZE.UNFREEZE_PARTS"
    keep = freeze_at_prefixes(model, freeze_at)
    frozen = {n for n, p in unwrap(model).named_parameters() if not p.requires_grad}
    # what FREEZE_AT froze stays frozen (the stack weights of an early-fusion stem are not its)
    frozen -= {n for n in frozen if any(_under(n, k) for k in keep) and not _is_polar(n)}
    selected: List[str] = []
    for entry in parts:
        hits = [n for n in select_parameters(model, [entry], key) if n in frozen]
        if not hits:
            raise ValueError(
                f"{key}: {entry!r} selects no parameter that MODEL.FREEZE.PARTS froze (it trains already, "
                f"or MODEL.BACKBONE.FREEZE_AT={freeze_at} keeps it frozen); add it to MODEL.FREEZE.PARTS"
            )
        selected += [n for n in hits if n not in selected]
    return selected


def parameter_table(model: nn.Module) -> str:
    """A table of trainable and frozen parameter counts per part (FrozenBatchNorm2d affines count
    as frozen parameters)."""
    model = unwrap(model)
    counts: Dict[str, List[int]] = OrderedDict()
    entries = [(n, p.numel(), p.requires_grad) for n, p in model.named_parameters()]
    for mod_name, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            base = mod_name + "." if mod_name else ""
            entries += [(base + b, getattr(module, b).numel(), False) for b in ("weight", "bias")]
    for alias in PART_ALIASES:
        counts[alias] = [0, 0]
    for name, numel, trainable in entries:
        counts.setdefault(part_of(name), [0, 0])[0 if trainable else 1] += numel
    rows = [(part, f"{t:,}", f"{f:,}") for part, (t, f) in counts.items() if t or f]
    total_t, total_f = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    rows.append(("total", f"{total_t:,}", f"{total_f:,}"))
    return tabulate(rows, headers=["part", "trainable", "frozen"], tablefmt="pipe", colalign=("left", "right", "right"))


def freeze_from_config(cfg, model: nn.Module) -> nn.Module:
    """Apply ``cfg.MODEL.FREEZE`` to ``model`` (in place), validate the unfreeze schedule and log
    the parameter table. Call it before building the optimizer and DDP."""
    section = cfg.MODEL.FREEZE
    unfreeze_iter, unfreeze_parts = int(section.UNFREEZE_ITER), list(section.UNFREEZE_PARTS)
    if unfreeze_iter < 0:
        raise ValueError(f"MODEL.FREEZE.UNFREEZE_ITER must be >= 0 (0 = never), got {unfreeze_iter}")
    if bool(unfreeze_iter) != bool(unfreeze_parts):
        raise ValueError(
            "MODEL.FREEZE.UNFREEZE_ITER and MODEL.FREEZE.UNFREEZE_PARTS go together: got "
            f"UNFREEZE_ITER={unfreeze_iter} and UNFREEZE_PARTS={unfreeze_parts}; set both or neither"
        )
    if section.PARTS:
        freeze_parameters(model, select_parameters(model, list(section.PARTS), "MODEL.FREEZE.PARTS"))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"MODEL.FREEZE.PARTS {list(section.PARTS)} freezes every parameter: nothing would train")
    if unfreeze_parts:
        select_unfreeze_parameters(model, unfreeze_parts, cfg.MODEL.BACKBONE.FREEZE_AT)
    logger.info("Trainable and frozen parameters per part:\n%s", parameter_table(model))
    return model
