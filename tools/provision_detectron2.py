#!/usr/bin/env python
"""Provide a working ``detectron2`` in the running Python environment.

Detectron2 is not on PyPI under its own name. ``pb1-detectron2==0.6`` is an sdist holding the
upstream v0.6 Python sources without ``layers/csrc``; it neither builds as shipped nor runs on
today's Python / torch / numpy / Pillow. This script, run with the environment's interpreter:

1. leaves an already working detectron2 alone (e.g. one built with CUDA ops on a GPU machine),
   unless ``--force``;
2. otherwise installs a cached wheel from ``--cache-dir`` if one was built before (offline), or
   downloads the sdist pinned by version and sha256, applies ``third_party/detectron2/compat.patch``
   (reviewable; its README lists each change), builds a pure-Python wheel without the C++
   extension and installs it with ``pip --no-deps`` (dependencies come from requirements/lock.txt);
3. runs a self-check: imports, a model-zoo config lookup, a train loader, one train step.

Only the standard library is used before detectron2 exists.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/" + SDIST_NAME
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
REPO_ROOT = Path(__file__).resolve().parent.parent
PATCH_FILE = REPO_ROOT / "third_party" / "detectron2" / "compat.patch"


def log(msg):
    print(f"[provision-detectron2] {msg}", flush=True)


def wheel_name() -> str:
    return f"pb1_detectron2-{expected_version()}-py3-none-any.whl"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_version() -> str:
    """``0.6+polar.<patch hash>``: the PEP 440 local version names the exact patch applied."""
    return "0.6+polar." + sha256_of(PATCH_FILE)[:12]


def installed_pb1_version():
    """Version of an installed pb1-detectron2 distribution (one this script made), or None."""
    from importlib import metadata

    try:
        return metadata.version("pb1-detectron2")
    except metadata.PackageNotFoundError:
        return None


def fetch_sdist(cache_dir: Path) -> Path:
    """Return the verified sdist, downloading it once into ``cache_dir``."""
    target = cache_dir / SDIST_NAME
    if target.exists() and sha256_of(target) == SDIST_SHA256:
        log(f"using cached {target}")
        return target
    log(f"downloading {SDIST_URL}")
    partial = target.with_suffix(".partial")
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    actual = sha256_of(partial)
    if actual != SDIST_SHA256:
        partial.unlink()
        raise SystemExit(f"{SDIST_URL}: sha256 {actual} does not match the pinned {SDIST_SHA256}")
    partial.replace(target)
    return target


def build_wheel(sdist: Path, wheel_dir: Path) -> Path:
    """Extract, patch and build the pure-Python wheel into ``wheel_dir``."""
    with tempfile.TemporaryDirectory(prefix="detectron2-build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / SDIST_NAME[: -len(".tar.gz")]
        log(f"applying {PATCH_FILE.relative_to(REPO_ROOT)}")
        subprocess.run(["git", "apply", "--whitespace=nowarn", str(PATCH_FILE)], cwd=src, check=True)
        log("building the wheel (no C++ extension)")
        env = dict(os.environ, D2_VERSION_SUFFIX=expected_version()[len("0.6"):])
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(wheel_dir), str(src)],
            env=env, check=True,
        )
    wheel = wheel_dir / wheel_name()
    if not wheel.exists():
        raise SystemExit(f"expected {wheel} after the build; found {sorted(os.listdir(wheel_dir))}")
    return wheel


def self_check():
    """Prove detectron2 works for this project; raise on the first failure."""
    import tempfile

    import numpy as np
    import torch

    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.evaluation import COCOEvaluator  # noqa: F401  (import is the check)
    from detectron2.modeling import build_model
    from detectron2.utils.analysis import FlopCountAnalysis  # noqa: F401
    from PIL import Image

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        records = []
        for i in range(2):
            path = os.path.join(tmp, f"{i}.png")
            Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
            records.append({
                "file_name": path, "image_id": i, "height": 64, "width": 80,
                "annotations": [{"bbox": [8, 8, 40, 30], "bbox_mode": 1, "category_id": i}],
            })
        name = "_provision_self_check"
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda: records)
            MetadataCatalog.get(name).thing_classes = ["a", "b"]
        cfg.DATASETS.TRAIN = (name,)
        loader = build_detection_train_loader(cfg)
        model = build_model(cfg)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        trainer = SimpleTrainer(model, loader, optimizer)
        trainer.train(0, 1)
        losses = trainer.storage.latest()
        total = losses["total_loss"][0]
        if not np.isfinite(total):
            raise RuntimeError(f"self-check train step gave a non-finite loss: {losses}")
    import detectron2

    log(f"self-check passed: detectron2 {detectron2.__version__} at {Path(detectron2.__file__).parent}")


def working_detectron2_present() -> bool:
    """Run the self-check in a fresh interpreter so a broken install cannot poison this one."""
    result = subprocess.run(
        [sys.executable, __file__, "--check-only"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        last_line = (result.stdout.strip().splitlines() or [""])[-1]
        log(f"no working detectron2 yet ({last_line})")
    return result.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / ".cache" / "detectron2"),
                        help="where the sdist and the built wheel are kept (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild and reinstall even if a working detectron2 exists")
    parser.add_argument("--check-only", action="store_true", help="only run the self-check")
    args = parser.parse_args()

    if args.check_only:
        self_check()
        return
    ours = installed_pb1_version()
    if ours is not None and ours != expected_version():
        log(f"installed pb1-detectron2 {ours} was built from another patch; rebuilding {expected_version()}")
    elif not args.force and working_detectron2_present():
        log("a working detectron2 is installed; leaving it alone (use --force to replace it)")
        return
    cache_dir = Path(args.cache_dir)
    # one wheel folder per patch content, so an edited patch never reuses a stale wheel
    wheel_dir = cache_dir / f"wheel-{sha256_of(PATCH_FILE)[:12]}"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_dir / wheel_name()
    if args.force or not wheel.exists():
        wheel = build_wheel(fetch_sdist(cache_dir), wheel_dir)
    else:
        log(f"using cached {wheel}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)], check=True)
    subprocess.run([sys.executable, __file__, "--check-only"], check=True)


if __name__ == "__main__":
    main()
