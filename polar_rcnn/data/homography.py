"""Two-sensor rigs: a 3x3 stack-to-image homography, checked and applied to put a stack on its image's grid.

Convention: pixel centres at integer coordinates (OpenCV's), ``(x_img, y_img, 1) ~ H @ (x_stk, y_stk, 1)``.
A homography comes from the record (the JSON image entry's ``"stack_homography"``) or the dataset
(``INPUT.STACK.HOMOGRAPHY``); it is an error (:class:`~polar_rcnn.data.errors.StackError` kind
"homography") when it is not 3x3 finite numbers, is singular, folds the stack's frame (a corner
maps to or behind the line at infinity), or leaves less than ``min_coverage`` of the image
covered by the warped stack. Image pixels the stack does not reach are 0.

:func:`estimate_homography` fits one from intensity images (ECC, coarse to fine) and
:func:`misalignment_px` measures how far two homographies put the same stack pixels apart.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import StackError
from .stack_io import map_channel_chunks

#: |det| of the homography scaled to unit Frobenius norm below which it counts as singular
SINGULAR_DET = 1e-12


def parse_homography(value, where: str = "homography") -> Optional[np.ndarray]:
    """A (3, 3) float64 matrix from 3 rows of 3 or 9 numbers; None for an empty value; StackError
    (kind "homography", ``where`` as its path) otherwise."""
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    try:
        h = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise StackError(where, f"homography {value!r} is not numbers ({e})", kind="homography") from e
    if h.size != 9 or h.shape not in ((9,), (3, 3)):
        raise StackError(where, f"homography must be 3x3 (3 rows of 3 or 9 numbers, row-major), got shape {h.shape}",
                         kind="homography")
    h = h.reshape(3, 3)
    if not np.isfinite(h).all():
        raise StackError(where, f"homography {h.tolist()} is not finite", kind="homography")
    return h


def _corners(hw: Sequence[int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def coverage(h: np.ndarray, stack_hw: Sequence[int], image_hw: Sequence[int]) -> float:
    """Fraction of the image's area inside the stack's warped frame (frames as pixel-centre polygons)."""
    quad = cv2.perspectiveTransform(_corners(stack_hw)[None].astype(np.float32), h)[0]
    rect = _corners(image_hw).astype(np.float32)
    area, _ = cv2.intersectConvexConvex(quad, rect)
    return float(area) / max(float(cv2.contourArea(rect)), 1e-9)


def inscribed_box(h: np.ndarray, stack_hw: Sequence[int], image_hw: Sequence[int]) -> Tuple[slice, slice]:
    """Rows and columns of the image inside the stack's warped frame: the box between its corners
    (exact for frames that stay near axis-aligned, as a rig's do), clipped to the image."""
    q = cv2.perspectiveTransform(_corners(stack_hw)[None], h)[0]  # top-left, top-right, bottom-right, bottom-left
    x0, x1 = max(q[0, 0], q[3, 0]), min(q[1, 0], q[2, 0])
    y0, y1 = max(q[0, 1], q[1, 1]), min(q[2, 1], q[3, 1])
    rows = slice(max(0, int(np.ceil(y0))), min(int(image_hw[0]), int(np.floor(y1)) + 1))
    cols = slice(max(0, int(np.ceil(x0))), min(int(image_hw[1]), int(np.floor(x1)) + 1))
    return rows, cols


def check_homography(h: np.ndarray, stack_hw: Sequence[int], image_hw: Sequence[int], path: str,
                     min_coverage: float = 0.5) -> None:
    """StackError (kind "homography", naming ``path``) unless ``h`` maps a ``stack_hw`` stack onto
    at least ``min_coverage`` of an ``image_hw`` image (see the module docstring)."""
    norm = np.linalg.norm(h)
    if norm == 0 or abs(np.linalg.det(h / norm)) < SINGULAR_DET:
        raise StackError(path, f"stack-to-image homography {h.tolist()} is singular", kind="homography")
    w = (np.concatenate([_corners(stack_hw), np.ones((4, 1))], axis=1) @ h.T)[:, 2]
    if not ((w > 0).all() or (w < 0).all()):
        raise StackError(path, f"stack-to-image homography {h.tolist()} maps a corner of the {tuple(stack_hw)} stack "
                               "to infinity (the stack's frame folds)", kind="homography")
    covered = coverage(h, stack_hw, image_hw)
    if covered < min_coverage:
        raise StackError(path, f"stack-to-image homography {h.tolist()} maps the {tuple(stack_hw)} stack (H, W) "
                               f"outside its {tuple(image_hw)} image: it covers {covered:.1%} of the image, less than "
                               f"INPUT.STACK.HOMOGRAPHY_MIN_COVERAGE {min_coverage:g}", kind="homography")


def warp_stack(stack: np.ndarray, h: np.ndarray, image_hw: Sequence[int], interpolation: int = cv2.INTER_LINEAR
               ) -> np.ndarray:
    """The (H, W, C) stack resampled onto the ``image_hw`` grid through ``h`` (stack -> image),
    in its dtype (float16 as float32), 0 where the stack does not reach."""
    if stack.dtype == np.float16:
        stack = stack.astype(np.float32)
    size = (int(image_hw[1]), int(image_hw[0]))
    return map_channel_chunks(stack, lambda part: cv2.warpPerspective(part, h, size, flags=interpolation,
                                                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0))


# ----------------------------------------------------------------------------- estimation


def _normalized(gray: np.ndarray) -> np.ndarray:
    x = np.asarray(gray, np.float32)
    x = x - x.mean()
    return x / max(float(x.std()), 1e-12)


def estimate_homography(stack_gray: np.ndarray, image_gray: np.ndarray, init: Optional[np.ndarray] = None, *,
                        levels: int = 3, iterations: int = 100, eps: float = 1e-6) -> Tuple[np.ndarray, float]:
    """Fit the stack-to-image homography between a stack's intensity and its image's gray level
    with OpenCV's ECC (``cv2.findTransformECC``, MOTION_HOMOGRAPHY), coarse to fine over
    ``levels`` pyramid levels, starting from ``init`` (default: the scaling between the two sizes).
    Returns ``(H, correlation)``: ECC's final correlation coefficient (1 = identical up to
    brightness and contrast). ``cv2.error`` when ECC does not converge."""
    stack_gray, image_gray = _normalized(stack_gray), _normalized(image_gray)
    if init is None:
        init = np.diag([image_gray.shape[1] / stack_gray.shape[1], image_gray.shape[0] / stack_gray.shape[0], 1.0])
    # ECC's warp maps template (image) coordinates to input (stack) coordinates: the inverse of H
    warp = np.linalg.inv(init).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    rho = 0.0
    for level in reversed(range(levels)):
        f = 2.0 ** -level
        s = np.diag([f, f, 1.0]).astype(np.float32)
        template = cv2.resize(image_gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if level else image_gray
        source = cv2.resize(stack_gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if level else stack_gray
        scaled = s @ warp @ np.linalg.inv(s)
        rho, scaled = cv2.findTransformECC(template, source, scaled.astype(np.float32), cv2.MOTION_HOMOGRAPHY,
                                           criteria, None, 5)
        warp = np.linalg.inv(s) @ scaled @ s
    h = np.linalg.inv(warp.astype(np.float64))
    return h / h[2, 2], float(rho)


def misalignment_px(a: np.ndarray, b: np.ndarray, stack_hw: Sequence[int], grid: int = 16) -> float:
    """RMS distance (image pixels) between where homographies ``a`` and ``b`` put a
    ``grid`` x ``grid`` lattice of the stack's pixels."""
    h, w = stack_hw
    ys, xs = np.meshgrid(np.linspace(0, h - 1, grid), np.linspace(0, w - 1, grid), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)[None].astype(np.float64)
    pa, pb = cv2.perspectiveTransform(points, a)[0], cv2.perspectiveTransform(points, b)[0]
    return float(np.sqrt(((pa - pb) ** 2).sum(axis=1).mean()))


__all__ = ["check_homography", "coverage", "estimate_homography", "inscribed_box", "misalignment_px",
           "parse_homography", "warp_stack"]
