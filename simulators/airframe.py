"""What flying costs the simulated drone: the airframe's power, and its pack's voltage.

Pure functions of a few figures, kept apart from the flight model (simulators/flight.py)
that integrates them, so the figures can be read, and checked, on their own. Power:
momentum theory for induced power in forward flight plus profile and parasitic power
(hover 560 W, about 450 W at 10 m/s); climbing costs m·g·v/η and descending saves a
little. A 6S 12 Ah pack gives about 28 minutes of hover. A cell's voltage follows a LiPo
open-circuit curve by state of charge; the pack's sags by the current drawn through its
internal resistance (the model's part).
"""

from __future__ import annotations

import itertools
import math
from typing import Final

# Airframe and pack
MASS_KG = 5.5
G = 9.81
AIR_DENSITY = 1.225
ROTOR_AREA_M2 = 0.5  # four 16-inch props
DRAG_AREA_M2 = 0.08
P_HOVER_W = 560.0  # ideal induced power 357 W at a figure of merit of 0.64
PROFILE_SHARE = 0.25  # of hover power: blade drag, constant with speed
CLIMB_EFFICIENCY = 0.7
P_AVIONICS_W = 8.0
P_IDLE_W = 60.0  # armed on the ground, props at idle
CELLS = 6
CAPACITY_AH = 12.0
PACK_RESISTANCE_OHM = 0.018
ENERGY_WH = CELLS * 3.7 * CAPACITY_AH  # 266 Wh
# LiPo open-circuit voltage per cell by state of charge.
OCV_CURVE: Final = (
    (0.0, 3.30),
    (0.05, 3.55),
    (0.1, 3.68),
    (0.2, 3.74),
    (0.3, 3.77),
    (0.4, 3.80),
    (0.5, 3.84),
    (0.6, 3.87),
    (0.7, 3.92),
    (0.8, 3.98),
    (0.9, 4.06),
    (1.0, 4.20),
)


def ocv_per_cell(soc: float) -> float:
    """A cell's open-circuit voltage at state of charge `soc` (0-1), interpolated."""
    soc = max(0.0, min(1.0, soc))
    for (s0, v0), (s1, v1) in itertools.pairwise(OCV_CURVE):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return OCV_CURVE[-1][1]


def flight_power_w(speed_mps: float, climb_mps: float) -> float:
    """Electrical power of level flight at `speed_mps` plus climbing (momentum theory)."""
    v_hover = math.sqrt(MASS_KG * G / (2 * AIR_DENSITY * ROTOR_AREA_M2))
    mu = (speed_mps / v_hover) ** 2
    induced_ratio = math.sqrt(math.sqrt(mu * mu / 4 + 1) - mu / 2)
    level = P_HOVER_W * (PROFILE_SHARE + (1 - PROFILE_SHARE) * induced_ratio)
    level += 0.5 * AIR_DENSITY * DRAG_AREA_M2 * speed_mps**3
    if climb_mps > 0:
        return level + MASS_KG * G * climb_mps / CLIMB_EFFICIENCY
    return max(0.7 * level, level + 0.3 * MASS_KG * G * climb_mps)  # descending saves a little
