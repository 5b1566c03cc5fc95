#!/usr/bin/env python
"""polar-rcnn: Detectron2 object detection from RGB plus an aligned polarization / spectral stack."""
from setuptools import find_packages, setup

setup(
    name="polar-rcnn",
    version="0.1.0",
    description="Detectron2 extension: Faster/Mask R-CNN and RetinaNet with a polarization or "
    "multispectral side branch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=("polar_rcnn", "polar_rcnn.*")),
    python_requires=">=3.9",
    # Ranges, so the package also installs on other stacks (e.g. torch 2.11 on the GPU machines).
    # Exact versions for this machine live in requirements/lock.txt. detectron2 itself is not on
    # PyPI under its name: tools/provision_detectron2.py provides it.
    install_requires=[
        "torch>=1.13",
        "torchvision>=0.14",
        "numpy>=1.21",
        "opencv-python-headless>=4.5",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5,<0.1.6",
        "tifffile>=2021.1",
        "polanalyser>=3.0,<4",  # Stokes parameters from polarizer-angle images
        "tqdm>=4.29",
        "matplotlib>=3.3",
        "optuna>=3.0,<6",  # tools/tune.py: hyperparameter search with SQLite studies
    ],
    extras_require={"test": ["pytest>=7"]},
)
