"""3-D models of the scene's vehicles: a city bicycle and a small car.

Dimensions are those of a city bicycle (700C wheels, about 1.05 m wheelbase, sized to its rider) and a small
hatchback (3.8 m x 1.7 m x 1.45 m). Points are metres in the vehicle frame: x forward, y left, z up, origin on
the ground under the vehicle's centre.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.skeleton import BicycleFit

WHEEL_POINTS = 18  # points per rim; enough for a smooth ellipse at surveillance resolution

# Corner i of a box is (x, y, z) = bits (4, 2, 1) of i; faces list corners in cyclic order.
BOX_FACES = np.array([[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]])


@dataclass(frozen=True, eq=False)
class Bicycle:
    wheels: np.ndarray  # (2, WHEEL_POINTS, 3) rims, rear then front
    tubes: np.ndarray  # (S, 2, 3) frame, fork, stem and seat post as segments
    fit: BicycleFit


@functools.cache
def bicycle(stature: float) -> Bicycle:
    """A bicycle sized for a rider of ``stature`` metres (frame geometry scales with the rider)."""
    k = stature / 1.75
    rear_hub, front_hub = np.array([-0.52, 0.0, 0.34]) * k, np.array([0.53, 0.0, 0.34]) * k
    crank_centre = np.array([-0.05, 0.0, 0.27]) * k
    seat_top, saddle = np.array([-0.22, 0.0, 0.82]) * k, np.array([-0.25, 0.0, 0.88]) * k
    head_top, head_bottom = np.array([0.40, 0.0, 0.86]) * k, np.array([0.45, 0.0, 0.68]) * k
    handlebar = np.array([0.38, 0.0, 1.0]) * k
    tubes = np.array([
        [rear_hub, crank_centre], [rear_hub, seat_top], [crank_centre, seat_top], [seat_top, saddle],
        [seat_top, head_top], [crank_centre, head_bottom], [head_bottom, head_top], [head_bottom, front_hub],
        [head_top, handlebar],
    ])  # fmt: skip
    angles = np.linspace(0.0, 2 * np.pi, WHEEL_POINTS, endpoint=False)
    rim = 0.34 * k * np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], axis=1)
    wheels = np.stack([rear_hub + rim, front_hub + rim])
    return Bicycle(wheels, tubes, BicycleFit(saddle, handlebar, crank_centre, 0.17 * k))


@dataclass(frozen=True, eq=False)
class Solid:
    """A convex six-faced solid given by its eight corners (see BOX_FACES) and outward face normals."""

    corners: np.ndarray  # (8, 3)
    normals: np.ndarray  # (6, 3)

    @classmethod
    def from_corners(cls, corners: np.ndarray) -> Solid:
        centre = corners.mean(axis=0)
        normals = []
        for face in corners[BOX_FACES]:
            normal = np.cross(face[2] - face[0], face[3] - face[1])
            normal *= np.sign(normal @ (face.mean(axis=0) - centre))
            normals.append(normal / np.linalg.norm(normal))
        return cls(corners, np.array(normals))


@dataclass(frozen=True, eq=False)
class Car:
    body: Solid
    cabin: Solid
    wheel_centres: np.ndarray  # (4, 3)
    wheel_radius: float


def _frustum(bottom: tuple[float, float, float], top: tuple[float, float, float], z0: float, z1: float) -> np.ndarray:
    """Corners of a solid whose bottom and top are axis-aligned rectangles (x0, x1, half width)."""
    corners = []
    for ix, iy, iz in itertools.product((0, 1), repeat=3):
        x0, x1, half_width = top if iz else bottom
        corners.append([(x0, x1)[ix], (-half_width, half_width)[iy], (z0, z1)[iz]])
    return np.array(corners, dtype=float)


CAR = Car(
    body=Solid.from_corners(_frustum((-1.9, 1.9, 0.85), (-1.9, 1.9, 0.85), 0.3, 0.95)),
    # The cabin narrows towards the roof and sits behind the bonnet, which is what reads as "car" from above.
    cabin=Solid.from_corners(_frustum((-1.5, 0.75, 0.8), (-1.3, 0.2, 0.7), 0.95, 1.45)),
    wheel_centres=np.array([[x, y, 0.3] for x in (-1.25, 1.25) for y in (-0.8, 0.8)]),
    wheel_radius=0.3,
)
