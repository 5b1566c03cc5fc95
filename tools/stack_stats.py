#!/usr/bin/env python
"""Per-channel mean and std of the stacks of registered datasets, as config lines to paste.

    .venv/bin/python tools/stack_stats.py --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml
    .venv/bin/python tools/stack_stats.py --dataset polar_synth_train --max-images 500 --output stack_stats.yaml

Datasets: every --dataset NAME, else the config's DATASETS.TRAIN. Each stack is read and converted
exactly like the mapper does (INPUT.STACK.LAYOUT / NPZ_KEY, scaled to float by INPUT.STACK.SCALE or
by dtype, then INPUT.STACK.DERIVED), so the numbers are what MODEL.POLAR.STACK_MEAN / STACK_STD
normalise in the model. Streaming: one stack at a time, per-image float64 means and squared
deviations merged with Chan et al.'s parallel formula (every pixel weighs the same; population
std, like numpy's default). Prints the result as yaml and as train_net.py command-line opts.

--output FILE.yaml writes a config to train with as it is:

    .venv/bin/python tools/stack_stats.py --config-file configs/my.yaml --output configs/my_stats.yaml
    .venv/bin/python train_net.py --config-file configs/my_stats.yaml

It holds "_BASE_: <--config-file>" (relative to FILE.yaml's folder, so both can move together; absolute
where no relative path exists), the trailing config overrides given here (they shaped the numbers:
INPUT.STACK.DERIVED, channels, datasets) and the measured MODEL.POLAR.STACK_MEAN / STACK_STD.
Without --config-file it holds the overrides and the statistics only: merge it into your config
(cfg.merge_from_file). The file is written atomically (a reader never sees half of it).
"""
import argparse
import logging
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

logger = logging.getLogger("polar_rcnn.tools.stack_stats")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE",
                   help="config yaml (default: Detectron2 + polar-rcnn defaults)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="registered dataset (repeatable); default: DATASETS.TRAIN")
    p.add_argument("--max-images", type=int, default=0, metavar="N",
                   help="use a seeded random sample of N images over all datasets (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample")
    p.add_argument("--workers", type=int, default=0, help="worker processes reading stacks (0: in this process)")
    p.add_argument("--decimals", type=int, default=6, help="decimals printed (default: %(default)s)")
    p.add_argument("--output", default="", metavar="FILE.yaml",
                   help="also write a config to train with: _BASE_ --config-file, the overrides, the statistics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as trailing KEY VALUE pairs, as in train_net.py")
    args = p.parse_args(argv)
    if args.max_images < 0 or args.workers < 0 or args.decimals < 1:
        p.error("--max-images >= 0, --workers >= 0 and --decimals >= 1 required")
    return args


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def config_lines(mean: Sequence[float], std: Sequence[float], decimals: int = 6) -> Tuple[str, str]:
    """(yaml text, command-line opts) setting MODEL.POLAR.STACK_MEAN / STACK_STD."""
    m = "[" + ", ".join(_number(v, decimals) for v in mean) + "]"
    s = "[" + ", ".join(_number(v, decimals) for v in std) + "]"
    yaml = f"MODEL:\n  POLAR:\n    STACK_MEAN: {m}\n    STACK_STD: {s}\n"
    return yaml, f'MODEL.POLAR.STACK_MEAN "{m}" MODEL.POLAR.STACK_STD "{s}"'


def base_path(config_file: str, output: str) -> str:
    """``config_file`` as ``_BASE_`` of ``output``: relative to ``output``'s folder, else absolute."""
    config_file = os.path.abspath(config_file)
    try:
        return os.path.relpath(config_file, os.path.dirname(os.path.abspath(output)))
    except ValueError:  # another drive (Windows)
        return config_file


class _FlowLists(list):
    """A list that yaml writes on one line (mappings stay in block style)."""


_DUMPER = None


def _dumper():
    """yaml's safe dumper, writing :class:`_FlowLists` on one line (made on first use: yaml is imported then)."""
    global _DUMPER
    if _DUMPER is None:
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        _Dumper.add_representer(_FlowLists, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                              flow_style=True))
        _DUMPER = _Dumper
    return _DUMPER


def _plain(value):
    """Config values as yaml.safe_dump writes them (tuples as one-line lists)."""
    if isinstance(value, (list, tuple)):
        return _FlowLists(_plain(v) for v in value)
    return value


def output_config(cfg, opts: Sequence[str], mean: Sequence[float], std: Sequence[float], decimals: int = 6,
                  base: str = "", header: str = "") -> str:
    """Yaml text: ``_BASE_: base`` (if given), the keys of the trailing ``opts`` (KEY VALUE ...) with
    their values in ``cfg``, and MODEL.POLAR.STACK_MEAN / STACK_STD; ``header`` lines as comments."""
    import yaml

    tree: Dict = {}
    keys = list(opts[0::2]) + ["MODEL.POLAR.STACK_MEAN", "MODEL.POLAR.STACK_STD"]
    values = [float(_number(v, decimals)) for v in mean], [float(_number(v, decimals)) for v in std]
    for key in keys:
        *parents, leaf = key.split(".")
        node, value = tree, cfg
        for part in parents:
            node = node.setdefault(part, {})
            value = value[part]
        node[leaf] = _plain(value[leaf])
    tree["MODEL"]["POLAR"]["STACK_MEAN"], tree["MODEL"]["POLAR"]["STACK_STD"] = map(_plain, values)
    text = "".join(f"# {line}\n" for line in header.splitlines())
    if base:
        text += yaml.safe_dump({"_BASE_": base}, default_flow_style=False)
    return text + yaml.dump(tree, Dumper=_dumper(), default_flow_style=False, sort_keys=False, width=1 << 16)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import numpy as np
    from detectron2.data import DatasetCatalog
    from polar_rcnn.data import DataError
    from polar_rcnn.data.polar_layout import check_stack_config
    from polar_rcnn.data.stack_statistics import compute_stack_stats
    from polar_rcnn.engine.cli import setup_tool
    from polar_rcnn.utils.atomic import atomic_write_text

    cfg = setup_tool(args.config_file, args.opts)
    if cfg is None:
        return 2
    try:
        check_stack_config(cfg)
    except ValueError as e:
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.dataset or cfg.DATASETS.TRAIN))
    if not names:
        print("No datasets: give --dataset NAME or a --config-file with DATASETS.TRAIN.", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        print(f"Not registered: {unknown}. Registered datasets: {sorted(DatasetCatalog.list())}", file=sys.stderr)
        return 2
    try:
        records = [r for name in names for r in DatasetCatalog.get(name)]
        if args.max_images and len(records) > args.max_images:
            keep = np.sort(np.random.default_rng(args.seed).choice(len(records), args.max_images, replace=False))
            records = [records[i] for i in keep]
        if not records:
            print(f"No images in {names}.", file=sys.stderr)
            return 2
        stats = compute_stack_stats(records, cfg, args.workers, not args.no_progress)
    except DataError as e:
        print(f"Error: {e}\nRun tools/check_dataset.py to list every problem of the dataset.", file=sys.stderr)
        return 2

    std = stats.std
    flat = np.flatnonzero(np.round(std, args.decimals) == 0).tolist()
    if flat:
        logger.warning("Channels %s are constant (std 0): their STACK_STD is set to 1.0", flat)
        std = np.where(np.round(std, args.decimals) == 0, 1.0, std)
    yaml, opts = config_lines(stats.mean, std, args.decimals)
    s = cfg.INPUT.STACK
    print(f"# Per-channel statistics of {len(records)} stacks of {', '.join(names)} ({stats.count} pixels each "
          f"channel), after INPUT.STACK.SCALE {s.SCALE:g} (0: by dtype) and INPUT.STACK.DERIVED {s.DERIVED!r}.")
    print("# yaml, for your config file:")
    print(yaml, end="")
    print("# or as train_net.py command-line opts:")
    print(opts)
    if args.output:
        base = base_path(args.config_file, args.output) if args.config_file else ""
        use = (f"Train with: train_net.py --config-file {args.output}" if base
               else "No --config-file was given: merge this file into your config.")
        header = (f"MODEL.POLAR.STACK_MEAN / STACK_STD of {len(records)} stacks of {', '.join(names)}, written by "
                  f"tools/stack_stats.py.\n{use}")
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_write_text(args.output, output_config(cfg, args.opts, stats.mean, std, args.decimals, base, header))
        print(f"# wrote {args.output}; {use[0].lower() + use[1:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
