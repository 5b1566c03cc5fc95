"""Polarization physics: Stokes parameters from polarizer-angle images, DoLP / AoLP, mirrors.

Convention (Malus' law for partially linearly polarized light, angles from the image x axis)::

    I(theta) = S0 / 2 * (1 + DoLP * cos(2 theta - 2 AoLP)) = (S0 + S1 cos 2theta + S2 sin 2theta) / 2
    DoLP = sqrt(S1^2 + S2^2) / S0,    AoLP = atan2(S2, S1) / 2  in [0, pi)

Stokes parameters from any list of >= 3 polarizer angles are the least-squares solution of the
polarizer Mueller rows, computed with `polanalyser <https://github.com/elerac/polanalyser>`_.
A mirror (horizontal or vertical flip) maps AoLP phi -> pi - phi (mod pi): S2 changes sign and
the image behind polarizer theta becomes the one behind (180 - theta) mod 180 degrees.
"""
import functools
from typing import List, Sequence, Tuple

import numpy as np

DEFAULT_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)
_ANGLE_TOL_DEG = 1e-3


@functools.lru_cache(maxsize=32)
def _stokes_matrix(angles_deg: Tuple[float, ...]) -> np.ndarray:
    """(N, 3) float32 matrix M with (S0, S1, S2) = intensities @ M (least squares)."""
    import polanalyser  # imported lazily: it pulls in matplotlib

    n = len(angles_deg)
    m = polanalyser.calcLinearStokes(np.eye(n), np.deg2rad(np.asarray(angles_deg, np.float64)))
    return np.asarray(m, np.float32)  # row k = Stokes vector of a unit intensity behind angle k


def stokes_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """(N, 3) float32 matrix M with (S0, S1, S2) = intensities @ M for polarizers at ``angles_deg``
    (least squares; a new array)."""
    return _stokes_matrix(check_angles(angles_deg)).copy()


def check_angles(angles_deg: Sequence[float]) -> Tuple[float, ...]:
    """Return the angles as floats; ValueError unless >= 3 of them are distinct modulo 180
    (needed to solve for S0, S1, S2)."""
    angles = tuple(float(a) for a in angles_deg)
    distinct = {round(a % 180.0, 3) for a in angles}
    if len(distinct) < 3:
        raise ValueError(f"INPUT.STACK.ANGLES {list(angles)}: need >= 3 polarizer angles distinct modulo 180 "
                         "to compute Stokes parameters")
    return angles


def stokes_from_intensities(intensities: np.ndarray, angles_deg: Sequence[float] = DEFAULT_ANGLES_DEG) -> np.ndarray:
    """(..., N) intensities behind polarizers at ``angles_deg`` -> (..., 3) float32 (S0, S1, S2)."""
    angles = check_angles(angles_deg)
    intensities = np.asarray(intensities, np.float32)
    if intensities.shape[-1] != len(angles):
        raise ValueError(f"got {intensities.shape[-1]} intensities for {len(angles)} angles {list(angles)}")
    m = _stokes_matrix(angles)
    out = np.zeros(intensities.shape[:-1] + (3,), np.float32)
    for k in range(3):  # weighted sums, not a matmul: no BLAS threads inside data-loader workers
        for n in range(len(angles)):
            if m[n, k] != 0.0:
                out[..., k] += intensities[..., n] * m[n, k]
    return out


def stokes_from_angles(i0, i45, i90, i135) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed form for 0/45/90/135 degrees: (S0, S1, S2) = ((i0+i45+i90+i135)/2, i0-i90, i45-i135)."""
    s0 = 0.5 * (i0 + i45 + i90 + i135)
    return s0, i0 - i90, i45 - i135


def dolp_aolp(s0, s1, s2, eps: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """Degree (clipped to 0..1) and angle (radians, [0, pi)) of linear polarization."""
    dolp = np.clip(np.sqrt(s1 * s1 + s2 * s2) / np.maximum(s0, eps), 0.0, 1.0)
    aolp = np.mod(0.5 * np.arctan2(s2, s1), np.pi)
    return dolp, aolp


def dolp_aolp_trig(s0, s1, s2, eps: float = 1e-6) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DoLP (clipped to 0..1), cos 2 AoLP and sin 2 AoLP = (S1, S2) / sqrt(S1^2 + S2^2), without
    computing the angle; cos and sin are 0 where the light is unpolarized (sqrt(S1^2 + S2^2) <= eps),
    since the angle is undefined there."""
    norm = np.sqrt(s1 * s1 + s2 * s2)
    dolp = np.clip(norm / np.maximum(s0, eps), 0.0, 1.0)
    inv = 1.0 / np.maximum(norm, eps)
    inv[norm <= eps] = 0.0
    return dolp, s1 * inv, s2 * inv


def dolp_aolp_from_stack(stack: np.ndarray, num_angles: int = 4,
                         angles_deg: Sequence[float] = DEFAULT_ANGLES_DEG) -> Tuple[np.ndarray, np.ndarray]:
    """DoLP and AoLP of an (H, W, C) stack laid out band-major (channel = band * num_angles +
    angle index) with polarizer ``angles_deg``, from the intensities summed over bands."""
    h, w, c = stack.shape
    if num_angles != len(angles_deg) or c % num_angles:
        raise ValueError(f"need a band-major stack of {list(angles_deg)} degree images, got {c} channels")
    summed = stack.reshape(h, w, c // num_angles, num_angles).astype(np.float32).sum(axis=2)
    s = stokes_from_intensities(summed, angles_deg)
    return dolp_aolp(s[..., 0], s[..., 1], s[..., 2])


def mirror_angle_permutation(angles_deg: Sequence[float]) -> List[int]:
    """Index map ``perm`` for a mirror: after a flip, the image behind ``angles_deg[i]`` is the
    one that was behind ``angles_deg[perm[i]]`` = (180 - angles_deg[i]) mod 180.

    Raises:
        ValueError: a mirrored angle is not in the list (e.g. 30 without 150).
    """
    angles = [float(a) % 180.0 for a in angles_deg]
    perm = []
    for a in angles:
        target = (180.0 - a) % 180.0
        match = [j for j, b in enumerate(angles) if min(abs(b - target), 180.0 - abs(b - target)) < _ANGLE_TOL_DEG]
        if not match:
            raise ValueError(
                f"INPUT.STACK.ANGLES {list(angles_deg)}: a flip maps the {a:g} degree polarizer to "
                f"{target:g} degrees, which is not in the list; add it, or disable flips (INPUT.RANDOM_FLIP 'none')"
            )
        perm.append(match[0])
    return perm


def mirror_aolp(aolp: np.ndarray) -> np.ndarray:
    """AoLP (radians) after a mirror: pi - phi, wrapped to [0, pi)."""
    return np.mod(np.pi - aolp, np.pi).astype(np.asarray(aolp).dtype, copy=False)
