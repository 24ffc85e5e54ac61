"""A map of a generated district, as SVG (for browsers and GIS) and PNG (for everything else).

Both files come from one scene: a list of plain shapes (polygons, polylines, circles, text)
in pixel coordinates, built once from the district and then written by two small back ends.
That keeps the two pictures identical by construction and keeps the cartography (what is
drawn, in which order and colour) apart from the file formats. The PNG is drawn by Pillow
at twice the size and scaled down, which is its way to smooth edges; Pillow is an ordinary
wheel with its own FreeType and zlib, so a fresh machine with only pip can draw the map
(an SVG converter such as rsvg-convert would be a system package).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

from agent.checkin.plan import Tier
from simulators.bigdistrict import NAME, District
from simulators.districtzones import NX, NY, ZoneKind
from simulators.streetnet import CELL_M, XY, RoadClass

PX_PER_M = 0.25  # 1 km = 250 px: the 7.2 km district is 1,800 px wide
MARGIN = 40
TITLE_H = 50
LEGEND_W = 330
SUPERSAMPLE = 2
SVG_FILE, PNG_FILE = "map.svg", "map.png"
FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"

BACKGROUND = "#f4f3ee"
ZONE_FILL: dict[ZoneKind, str] = {  # after ColorBrewer's Set3, lightened under the red lines
    ZoneKind.COMMERCIAL: "#f9b4ab",
    ZoneKind.SQUARE: "#fccde5",
    ZoneKind.TRANSPORT_HUB: "#bebada",
    ZoneKind.SCHOOL: "#ffed6f",
    ZoneKind.HOSPITAL: "#8dd3c7",
    ZoneKind.MARKET: "#fdb462",
    ZoneKind.GOVERNMENT: "#c9a0ca",
    ZoneKind.PARK: "#b3de69",
    ZoneKind.BACK_STREETS: "#e5d8bd",
    ZoneKind.RESIDENTIAL: "#efebe3",
    ZoneKind.WORKPLACE: "#d5d8dc",
}
TIER_COLOUR: dict[Tier, str] = {
    Tier.STREET: "#d62728",
    Tier.COMMUNITY: "#1f5fbf",
    Tier.GRID: "#2a9d3a",
    Tier.AERIAL: "#8e44ad",
}
TIER_LABEL = {
    Tier.STREET: "street-level line",
    Tier.COMMUNITY: "community-level line",
    Tier.GRID: "grid-level line",
    Tier.AERIAL: "drone flight",
}
ROAD_STYLE: dict[RoadClass, tuple[str, float]] = {
    RoadClass.ARTERIAL: ("#8a8a8a", 3.0),
    RoadClass.AVENUE: ("#8a8a8a", 3.0),
    RoadClass.LOCAL: ("#b9b6ae", 1.2),
}
RIVER = ("#7fb3d9", 14.0)
TEXT = "#222222"

Pt = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Polygon:
    points: tuple[Pt, ...]
    fill: str
    stroke: str | None = None
    width: float = 1.0


@dataclass(frozen=True, slots=True)
class Polyline:
    points: tuple[Pt, ...]
    stroke: str
    width: float
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Circle:
    centre: Pt
    r: float
    fill: str
    stroke: str | None = None
    width: float = 1.0


@dataclass(frozen=True, slots=True)
class Text:
    at: Pt
    text: str
    size: float
    fill: str = TEXT
    anchor: str = "start"  # start, middle or end, as in SVG
    bold: bool = False


Shape = Polygon | Polyline | Circle | Text


@dataclass(frozen=True, slots=True)
class Scene:
    width: int
    height: int
    shapes: tuple[Shape, ...]


# ------------------------------------------------------------------------------ the scene


def _frame(xy: XY) -> Pt:
    """Pixel position of a local (east, north) position: north is up."""
    half_w, half_h = NX * CELL_M / 2, NY * CELL_M / 2
    return (
        round(MARGIN + (xy[0] + half_w) * PX_PER_M, 2),
        round(TITLE_H + MARGIN + (half_h - xy[1]) * PX_PER_M, 2),
    )


def _legend(x: float, y: float, counts: dict[str, int], *, river: bool) -> list[Shape]:
    out: list[Shape] = [Text((x, y), "Legend", 20, bold=True)]
    y += 34
    out.append(Text((x, y), "Zones", 15, bold=True))
    y += 24
    for kind, fill in ZONE_FILL.items():
        box = ((x, y - 8), (x + 26, y - 8), (x + 26, y + 8), (x, y + 8))
        out.append(Polygon(box, fill, "#9a968c"))
        label = kind.value.replace("_", " ")
        out.append(Text((x + 36, y), f"{label} ({counts.get(kind.value, 0)})", 14))
        y += 24
    y += 10
    out.append(Text((x, y), "Patrol lines and points", 15, bold=True))
    y += 24
    for tier, colour in TIER_COLOUR.items():
        out.append(Polyline(((x, y), (x + 26, y)), colour, 3.0, dashed=tier is Tier.AERIAL))
        if tier is not Tier.AERIAL:
            out.append(Circle((x + 13, y), 5, colour, "#ffffff", 1.5))
        out.append(Text((x + 36, y), TIER_LABEL[tier], 14))
        y += 24
    y += 10
    out.append(Text((x, y), "Base map", 15, bold=True))
    y += 24
    base = [
        ("arterial / avenue", ROAD_STYLE[RoadClass.ARTERIAL]),
        ("local street", ROAD_STYLE[RoadClass.LOCAL]),
    ]
    for label, (colour, width) in [*base, ("river", (RIVER[0], 8.0))] if river else base:
        out.append(Polyline(((x, y), (x + 26, y)), colour, width))
        out.append(Text((x + 36, y), label, 14))
        y += 24
    out += _dock_symbol((x + 13, y), "")
    out.append(Text((x + 36, y), "drone dock (on a hill top)", 14))
    return out


def _dock_symbol(at: Pt, label: str) -> list[Shape]:
    x, y = at
    tri = ((x, y - 10), (x + 9, y + 7), (x - 9, y + 7))
    out: list[Shape] = [Polygon(tri, "#111111", "#ffffff", 2.0)]
    if label:
        out.append(Text((x + 13, y - 4), label, 16, bold=True))
    return out


def _scale_bar(x: float, y: float) -> list[Shape]:
    km = 1000 * PX_PER_M
    out: list[Shape] = []
    for k in range(2):
        fill = "#222222" if k % 2 == 0 else "#ffffff"
        seg = ((x + k * km / 2, y), (x + (k + 1) * km / 2, y), (x + (k + 1) * km / 2, y + 8))
        out.append(Polygon((*seg, (x + k * km / 2, y + 8)), fill, "#222222"))
    out += [
        Text((x, y - 10), "0", 13, anchor="middle"),
        Text((x + km, y - 10), "1 km", 13, anchor="middle"),
    ]
    return out


def _north_arrow(x: float, y: float) -> list[Shape]:
    return [
        Polygon(((x, y - 22), (x + 9, y + 6), (x, y), (x - 9, y + 6)), "#222222"),
        Text((x, y - 34), "N", 16, anchor="middle", bold=True),
    ]


def _base(d: District) -> list[Shape]:
    """Zones, the river and the streets, bottom to top."""
    out: list[Shape] = [
        Polygon(tuple(map(_frame, z.ring[:-1])), ZONE_FILL[z.kind], "#ffffff", 1.0) for z in d.zones
    ]
    if d.net.river:
        out.append(Polyline(tuple(map(_frame, d.net.river)), RIVER[0], RIVER[1]))
    for road in (RoadClass.LOCAL, RoadClass.ARTERIAL, RoadClass.AVENUE):
        colour, w = ROAD_STYLE[road]
        out += [
            Polyline((_frame(d.net.nodes[s.a]), _frame(d.net.nodes[s.b])), colour, w)
            for s in d.net.streets
            if s.road is road
        ]
    return out


def _patrols(d: District) -> list[Shape]:
    """Lines (street-level on top), drone flights, points, docks."""
    out: list[Shape] = []
    for tier in (Tier.GRID, Tier.COMMUNITY, Tier.STREET):
        out += [
            Polyline(tuple(map(_frame, ln.route)), TIER_COLOUR[tier], 2.2)
            for ln in d.lines
            if ln.line.tier is tier
        ]
    aerial = TIER_COLOUR[Tier.AERIAL]
    out += [Polyline(tuple(map(_frame, r)), aerial, 2.0, dashed=True) for r in d.aerial_routes]
    out += [
        Circle(_frame(p.xy), 4.5, TIER_COLOUR[p.point.tier or Tier.STREET], "#ffffff", 1.2)
        for p in d.points
    ]
    for route in d.aerial_routes:  # dock, the flight's points, dock
        out += [Circle(_frame(xy), 4.0, "#ffffff", aerial, 2.0) for xy in route[1:-1]]
    for dock in d.docks:
        out += _dock_symbol(_frame(dock.xy), dock.id)
    return out


def scene(d: District) -> Scene:
    """Everything on the map, in drawing order, in pixels."""
    map_w, map_h = NX * CELL_M * PX_PER_M, NY * CELL_M * PX_PER_M
    width = math.ceil(2 * MARGIN + map_w + LEGEND_W)
    height = math.ceil(TITLE_H + 2 * MARGIN + map_h)
    title = (
        f"{NAME}, seed {d.seed}: {len(d.zones)} zones, {len(d.points)} points, "
        f"{len(d.lines)} lines, {len(d.members)} members, {len(d.docks)} drone docks"
    )
    kinds: dict[str, int] = {}
    for z in d.zones:
        kinds[z.kind.value] = kinds.get(z.kind.value, 0) + 1
    right, bottom = MARGIN + map_w, TITLE_H + MARGIN + map_h
    shapes = [
        *_base(d),
        *_patrols(d),
        Text((MARGIN, TITLE_H / 2 + 10), title, 22, bold=True),
        *_legend(right + 30, TITLE_H + MARGIN + 10, kinds, river=bool(d.net.river)),
        *_scale_bar(right + 40, bottom - 30),
        *_north_arrow(right + 250, bottom - 110),
    ]
    return Scene(width, height, tuple(shapes))


# ------------------------------------------------------------------------------ SVG


def _pts(points: Sequence[Pt]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in points)


def to_svg(sc: Scene) -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{sc.width}" height="{sc.height}" '
        f'viewBox="0 0 {sc.width} {sc.height}">',
        f'<rect width="100%" height="100%" fill="{BACKGROUND}"/>',
    ]
    for s in sc.shapes:
        if isinstance(s, Polygon):
            stroke = f' stroke="{s.stroke}" stroke-width="{s.width:g}"' if s.stroke else ""
            out.append(f'<polygon points="{_pts(s.points)}" fill="{s.fill}"{stroke}/>')
        elif isinstance(s, Polyline):
            dash = ' stroke-dasharray="8 6"' if s.dashed else ""
            out.append(
                f'<polyline points="{_pts(s.points)}" fill="none" stroke="{s.stroke}" '
                f'stroke-width="{s.width:g}" stroke-linecap="round" stroke-linejoin="round"{dash}/>'
            )
        elif isinstance(s, Circle):
            stroke = f' stroke="{s.stroke}" stroke-width="{s.width:g}"' if s.stroke else ""
            x, y = s.centre
            out.append(f'<circle cx="{x:g}" cy="{y:g}" r="{s.r:g}" fill="{s.fill}"{stroke}/>')
        else:
            weight = ' font-weight="bold"' if s.bold else ""
            out.append(
                f'<text x="{s.at[0]:g}" y="{s.at[1]:g}" font-family="{FONT}" '
                f'font-size="{s.size:g}" fill="{s.fill}" text-anchor="{s.anchor}" '
                f'dominant-baseline="middle"{weight}>'
                f"{escape(s.text)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ PNG


def _dashes(points: Sequence[Pt], on: float, off: float) -> list[tuple[Pt, Pt]]:
    """The drawn pieces of a dashed polyline."""
    pieces: list[tuple[Pt, Pt]] = []
    drawing, left = True, on
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        seg = math.hypot(bx - ax, by - ay)
        pos = 0.0
        while seg > 0 and pos < seg:
            step = min(left, seg - pos)
            if drawing:
                t0, t1 = pos / seg, (pos + step) / seg
                pieces.append(
                    (
                        (ax + t0 * (bx - ax), ay + t0 * (by - ay)),
                        (ax + t1 * (bx - ax), ay + t1 * (by - ay)),
                    )
                )
            pos += step
            left -= step
            if left <= 1e-9:
                drawing = not drawing
                left = on if drawing else off
    return pieces


_ANCHOR = {"start": "lm", "middle": "mm", "end": "rm"}


class _Painter:
    """Draws shapes on a Pillow canvas SUPERSAMPLE times the scene's size."""

    def __init__(self, sc: Scene) -> None:
        self.k = SUPERSAMPLE
        self.image = Image.new("RGB", (sc.width * self.k, sc.height * self.k), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self._fonts: dict[float, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}

    def _px(self, points: Sequence[Pt]) -> list[Pt]:
        return [(x * self.k, y * self.k) for x, y in points]

    def _width(self, width: float) -> int:
        return max(1, round(width * self.k))

    def polygon(self, s: Polygon) -> None:
        fill = None if s.fill == "none" else s.fill
        self.draw.polygon(
            self._px(s.points), fill=fill, outline=s.stroke, width=self._width(s.width)
        )

    def polyline(self, s: Polyline) -> None:
        width, points = self._width(s.width), self._px(s.points)
        if s.dashed:
            for a, b in _dashes(points, 8 * self.k, 6 * self.k):
                self.draw.line([a, b], fill=s.stroke, width=width)
            return
        self.draw.line(points, fill=s.stroke, width=width, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]) if width > 2 else ():  # round caps, as in the SVG
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=s.stroke)

    def circle(self, s: Circle) -> None:
        x, y, r = s.centre[0] * self.k, s.centre[1] * self.k, s.r * self.k
        box = (x - r, y - r, x + r, y + r)
        self.draw.ellipse(box, fill=s.fill, outline=s.stroke, width=self._width(s.width))

    def text(self, s: Text) -> None:
        if s.size not in self._fonts:
            self._fonts[s.size] = ImageFont.load_default(s.size * self.k)
        font, anchor = self._fonts[s.size], _ANCHOR[s.anchor]
        x, y = s.at[0] * self.k, s.at[1] * self.k
        for dx in (0, 1) if s.bold else (0,):  # the bundled font has no bold face: overstrike
            self.draw.text((x + dx, y), s.text, fill=s.fill, font=font, anchor=anchor)


def to_png(sc: Scene, path: Path) -> None:
    painter = _Painter(sc)
    for s in sc.shapes:
        if isinstance(s, Polygon):
            painter.polygon(s)
        elif isinstance(s, Polyline):
            painter.polyline(s)
        elif isinstance(s, Circle):
            painter.circle(s)
        else:
            painter.text(s)
    small = painter.image.resize((sc.width, sc.height), Image.Resampling.LANCZOS)
    small.save(path, format="PNG")


def write_map(d: District, out: Path) -> list[Path]:
    """map.svg and map.png of the district in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    sc = scene(d)
    svg, png = out / SVG_FILE, out / PNG_FILE
    svg.write_text(to_svg(sc), encoding="utf-8")
    to_png(sc, png)
    return [svg, png]
