"""Polarization quantities from intensities behind linear polarizers at 0, 45, 90 and 135 degrees."""
from typing import Tuple

import numpy as np


def stokes_from_angles(i0, i45, i90, i135) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear Stokes parameters (S0, S1, S2) from the four polarizer-angle intensities."""
    s0 = 0.5 * (i0 + i45 + i90 + i135)
    return s0, i0 - i90, i45 - i135


def dolp_aolp(s0, s1, s2, eps: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """Degree (0..1) and angle (radians, [0, pi)) of linear polarization."""
    dolp = np.clip(np.sqrt(s1 * s1 + s2 * s2) / np.maximum(s0, eps), 0.0, 1.0)
    aolp = np.mod(0.5 * np.arctan2(s2, s1), np.pi)
    return dolp, aolp


def dolp_aolp_from_stack(stack: np.ndarray, num_angles: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """DoLP and AoLP of an (H, W, C) stack laid out band-major with ``num_angles`` (0/45/90/135)
    polarizer angles per band, from the intensities summed over bands."""
    h, w, c = stack.shape
    if num_angles != 4 or c % num_angles:
        raise ValueError(f"need a band-major stack of 0/45/90/135 degree images, got {c} channels")
    angles = stack.reshape(h, w, c // num_angles, num_angles).astype(np.float32).sum(axis=2)
    return dolp_aolp(*stokes_from_angles(*(angles[..., i] for i in range(num_angles))))
