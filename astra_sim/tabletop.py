"""A small VIMA-style SE(2) pick-and-place tabletop, rendered with OpenCV (no GL).

The table is the plane z = 0 in metres: x in [0, 0.5] points away from the robot (and the front
camera), y in [-0.25, 0.25] points left. On it lie coloured shapes (square / circle / triangle)
and two fixed containers (a bowl or a square frame). One action is a whole pick-and-place
(``discrete_se2``): ``(pick_x, pick_y, pick_theta, place_x, place_y, place_theta)``.

Dynamics (a rigid top-down gripper):

* The pick grasps the object whose centre is nearest to ``(pick_x, pick_y)``, if that centre is
  within ``pick_position_tolerance``, and only if ``pick_theta`` matches the object's orientation
  modulo its symmetry (90 deg square, 120 deg triangle, any for a circle) within
  ``pick_theta_tolerance``. Otherwise nothing moves (a miss).
* A grasped object is carried to ``(place_x, place_y)`` and turned with the gripper by
  ``place_theta - pick_theta``; it ends on top of everything else. Containers cannot be picked.

Tasks (instruction templates below): ``place`` one object into a container (1 step),
``place_pair`` two named objects into a container (2 steps), ``place_all`` objects of one colour
into a container (2-3 steps; the instruction does not say how many, so progress must be read from
the images and the action history), ``rotate`` an object in place by 30/45/60 degrees (1 step).

Cameras: ``top`` is an orthographic top-down view; ``front`` is a pinhole camera in front of the
table looking down at it, made by warping the top-down render with the table-plane homography
(objects are flat decals on the table, so the front view is exact for them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from astra_core.action_space import ActionSpaceSpec
from astra_sim.env import Observation, StepResult

COLORS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (235, 200, 20),
    "purple": (148, 63, 189),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
CONTAINER_KINDS: tuple[str, ...] = ("bowl", "frame")
TASK_KINDS: tuple[str, ...] = ("place", "place_pair", "place_all", "rotate")
CAMERAS: tuple[str, ...] = ("top", "front")
ROTATION_DEGREES: tuple[int, ...] = (30, 45, 60)

# Rotational symmetry of each shape (radians); None = fully symmetric.
SYMMETRY: dict[str, float | None] = {"square": math.pi / 2, "triangle": 2 * math.pi / 3, "circle": None}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "place": (
        "put the {obj} into the {container}",
        "place the {obj} in the {container}",
        "move the {obj} to the {container}",
        "pick up the {obj} and drop it in the {container}",
    ),
    "place_pair": (
        "put the {obj} and the {obj2} into the {container}",
        "place the {obj} and the {obj2} in the {container}",
        "move both the {obj} and the {obj2} to the {container}",
    ),
    "place_all": (
        "put all {color} objects into the {container}",
        "place every {color} object in the {container}",
        "move all the {color} things to the {container}",
    ),
    "rotate": (
        "rotate the {obj} by {degrees} degrees",
        "turn the {obj} {degrees} degrees counterclockwise",
        "rotate the {obj} {degrees} degrees",
    ),
}

TABLE_RGB = (205, 190, 160)
TABLE_EDGE_RGB = (120, 100, 75)
WALL_TOP_RGB = (150, 160, 175)
WALL_BOTTOM_RGB = (95, 100, 110)
CONTAINER_INSIDE_RGB = (232, 228, 218)


@dataclass
class TabletopConfig:
    """Everything that defines the simulator; validated at construction."""

    image_size: int = 96  # square images, pixels per side
    cameras: tuple[str, ...] = CAMERAS
    supersample: int = 2  # render at this multiple and area-downsample (anti-aliasing)
    tasks: tuple[str, ...] = TASK_KINDS  # sampled uniformly per seed
    min_objects: int = 3
    max_objects: int = 5
    max_steps: int = 6  # step limit per episode (the longest task needs 3 expert steps)
    object_half_size: float = 0.025  # metres; squares are 5 cm wide
    container_radius: float = 0.075  # bowl radius / frame half-width, metres
    container_inner_radius: float = 0.06  # an object is "in" a container if its centre is this close
    pick_position_tolerance: float = 0.02  # metres
    pick_theta_tolerance: float = 0.35  # radians (20 deg), modulo the object's symmetry
    rotate_theta_tolerance: float = 0.15  # radians, rotate-task success
    rotate_position_tolerance: float = 0.02  # metres, rotate-task success: object stays in place
    control_rate_hz: float = 1.0  # one pick-and-place per second
    action_bins: int = 256  # bins per action dimension of the discrete_se2 space (VIMA uses 256)
    # Front camera: pinhole at (x, y, z) looking at the table point (x, y, 0); horizontal FOV.
    front_camera_position: tuple[float, float, float] = (-0.15, 0.0, 0.40)
    front_camera_target: tuple[float, float] = (0.25, 0.0)
    front_camera_fov_deg: float = 55.0

    # Table extent (metres); fixed because the top camera covers exactly the table.
    x_range: tuple[float, float] = field(default=(0.0, 0.5), init=False)
    y_range: tuple[float, float] = field(default=(-0.25, 0.25), init=False)

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.tasks = tuple(self.tasks)
        self.front_camera_position = tuple(float(v) for v in self.front_camera_position)  # type: ignore[assignment]
        self.front_camera_target = tuple(float(v) for v in self.front_camera_target)  # type: ignore[assignment]
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"tabletop.image_size={self.image_size}: must be in [16, 1024]")
        if not self.cameras or any(c not in CAMERAS for c in self.cameras) or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"tabletop.cameras={list(self.cameras)}: must be distinct names from {list(CAMERAS)}")
        if not self.tasks or any(t not in TASK_KINDS for t in self.tasks):
            raise ValueError(f"tabletop.tasks={list(self.tasks)}: must be names from {list(TASK_KINDS)}")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"tabletop.supersample={self.supersample}: must be in [1, 4]")
        if not 3 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(
                f"tabletop.min_objects={self.min_objects}, max_objects={self.max_objects}: need 3 <= min <= max <= 6"
            )
        if self.max_steps < 3:
            raise ValueError(f"tabletop.max_steps={self.max_steps}: must be >= 3 (place_all needs up to 3 steps)")
        if not 0 < self.container_inner_radius < self.container_radius:
            raise ValueError("tabletop.container_inner_radius must be in (0, container_radius)")
        for name in ("object_half_size", "pick_position_tolerance", "pick_theta_tolerance",
                     "rotate_theta_tolerance", "rotate_position_tolerance", "control_rate_hz"):
            if not getattr(self, name) > 0:
                raise ValueError(f"tabletop.{name}={getattr(self, name)}: must be > 0")
        if len(self.front_camera_position) != 3 or len(self.front_camera_target) != 2:
            raise ValueError("tabletop.front_camera_position needs (x, y, z) and front_camera_target (x, y)")
        if not 10.0 <= self.front_camera_fov_deg <= 150.0:
            raise ValueError(f"tabletop.front_camera_fov_deg={self.front_camera_fov_deg}: must be in [10, 150]")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "TabletopConfig":
        valid = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(options) - valid
        if unknown:
            raise ValueError(f"tabletop: unknown options {sorted(unknown)}; valid options: {sorted(valid)}")
        return cls(**options)


@dataclass
class TableObject:
    color: str
    shape: str
    x: float
    y: float
    theta: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class Container:
    color: str
    kind: str  # "bowl" | "frame"
    x: float
    y: float
    theta: float  # frames are drawn rotated; bowls ignore it

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass
class Task:
    kind: str  # one of TASK_KINDS
    instruction: str
    targets: list[int]  # indices into the object list (fixed for the episode)
    container: int | None  # index into the container list (placing tasks)
    goal_theta: float | None = None  # rotate: required orientation
    goal_xy: tuple[float, float] | None = None  # rotate: the object must stay here


def wrap_angle(a: float) -> float:
    """Angle in [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def symmetric_angle_error(a: float, b: float, shape: str) -> float:
    """|a - b| modulo the shape's rotational symmetry (0 for a circle)."""
    period = SYMMETRY[shape]
    if period is None:
        return 0.0
    d = (a - b) % period
    return min(d, period - d)


def canonical_angle(theta: float, shape: str) -> float:
    """The representative of ``theta`` modulo the shape's symmetry in [-period/2, period/2)."""
    period = SYMMETRY[shape]
    if period is None:
        return 0.0
    return (theta + period / 2) % period - period / 2


class TabletopEnv:
    """The tabletop simulator; implements :class:`astra_sim.env.Env`."""

    def __init__(self, config: TabletopConfig | None = None) -> None:
        self.config = config or TabletopConfig()
        c = self.config
        self._spec = ActionSpaceSpec(kind="discrete_se2", num_bins=c.action_bins)
        self._low = np.array([c.x_range[0], c.y_range[0], -math.pi] * 2)
        self._high = np.array([c.x_range[1], c.y_range[1], math.pi] * 2)
        self._canvas_px = c.image_size * c.supersample
        # metres -> supersampled top-image pixels (column, row): row 0 is the far edge (x max),
        # column 0 the left edge (y max), i.e. the robot's view from behind the near edge.
        self._px_per_m = self._canvas_px / (c.x_range[1] - c.x_range[0])
        self._front_homography = self._top_to_front_homography()
        self._wall = self._render_wall()
        self.objects: list[TableObject] = []
        self.containers: list[Container] = []
        self.task: Task | None = None
        self._draw_order: list[int] = []
        self.steps = 0
        self._done = True

    @classmethod
    def from_options(cls, **options: Any) -> "TabletopEnv":
        return cls(TabletopConfig.from_dict(options))

    # ---- Env protocol ------------------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        return list(self.config.cameras)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.config.image_size, self.config.image_size)

    @property
    def action_space(self) -> ActionSpaceSpec:
        return self._spec

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._low.copy(), self._high.copy()

    @property
    def control_rate_hz(self) -> float:
        return self.config.control_rate_hz

    def reset(self, seed: int) -> tuple[Observation, str]:
        rng = np.random.default_rng(int(seed))
        kind = self.config.tasks[int(rng.integers(len(self.config.tasks)))]
        self.containers, self.objects, self.task = self._sample_scene(rng, kind)
        self._draw_order = list(range(len(self.objects)))  # back to front; a placed object goes last
        self.steps = 0
        self._done = False
        return self.render(), self.task.instruction

    def step(self, action: np.ndarray) -> StepResult:
        if self.task is None or self._done:
            raise RuntimeError("tabletop: the episode is over (or never started); call reset(seed) first")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (6,) or not np.isfinite(a).all():
            raise ValueError(f"tabletop: action must be 6 finite numbers "
                             f"(pick_x pick_y pick_theta place_x place_y place_theta), got {a!r}")
        a = np.clip(a, self._low, self._high)
        picked, failure = self._grasp(a[0], a[1], a[2])
        if picked is not None:
            obj = self.objects[picked]
            obj.x, obj.y = float(a[3]), float(a[4])
            obj.theta = wrap_angle(obj.theta + a[5] - a[2])
            # The placed object lands on top of the others.
            self._draw_order.remove(picked)
            self._draw_order.append(picked)
        self.steps += 1
        success = self.goal_reached()
        self._done = success or self.steps >= self.config.max_steps
        info = {
            "picked": None if picked is None else self.objects[picked].name,
            "pick_failure": failure,
            "task": self.task.kind,
            "steps": self.steps,
        }
        return StepResult(self.render(), success, self._done, info)

    def expert_action(self) -> np.ndarray:
        """The scripted expert's next pick-and-place for the current state."""
        task = self._require_task()
        if task.kind == "rotate":
            obj = self.objects[task.targets[0]]
            assert task.goal_theta is not None and task.goal_xy is not None
            pick_theta = canonical_angle(obj.theta, obj.shape)
            # Turn by the remaining rotation, choosing the smallest equivalent one.
            turn = canonical_angle(task.goal_theta - obj.theta, obj.shape)
            return np.array([obj.x, obj.y, pick_theta, *task.goal_xy, wrap_angle(pick_theta + turn)])
        assert task.container is not None
        pending = [i for i in task.targets if not self._inside(self.objects[i], self.containers[task.container])]
        if not pending:  # goal already holds: a no-op re-place of the first target onto itself
            obj = self.objects[task.targets[0]]
            theta = canonical_angle(obj.theta, obj.shape)
            return np.array([obj.x, obj.y, theta, obj.x, obj.y, theta])
        obj = self.objects[pending[0]]
        theta = canonical_angle(obj.theta, obj.shape)
        place_x, place_y = self._free_slot(task.container)
        return np.array([obj.x, obj.y, theta, place_x, place_y, theta])

    # ---- state queries -----------------------------------------------------------------------
    def goal_reached(self) -> bool:
        task = self._require_task()
        if task.kind == "rotate":
            obj = self.objects[task.targets[0]]
            assert task.goal_theta is not None and task.goal_xy is not None
            return (symmetric_angle_error(obj.theta, task.goal_theta, obj.shape) <= self.config.rotate_theta_tolerance
                    and math.dist((obj.x, obj.y), task.goal_xy) <= self.config.rotate_position_tolerance)
        assert task.container is not None
        box = self.containers[task.container]
        return all(self._inside(self.objects[i], box) for i in task.targets)

    @property
    def num_expert_steps(self) -> int:
        """Pick-and-places the expert needs from the start of the episode."""
        task = self._require_task()
        return 1 if task.kind == "rotate" else len(task.targets)

    def _require_task(self) -> Task:
        if self.task is None:
            raise RuntimeError("tabletop: call reset(seed) first")
        return self.task

    def _inside(self, obj: TableObject, box: Container) -> bool:
        dx, dy = obj.x - box.x, obj.y - box.y
        r = self.config.container_inner_radius
        if box.kind == "bowl":
            return dx * dx + dy * dy <= r * r
        c, s = math.cos(-box.theta), math.sin(-box.theta)  # into the frame's own axes
        return abs(c * dx - s * dy) <= r and abs(s * dx + c * dy) <= r

    def _grasp(self, x: float, y: float, theta: float) -> tuple[int | None, str | None]:
        dists = [math.dist((x, y), (o.x, o.y)) for o in self.objects]
        nearest = int(np.argmin(dists))
        if dists[nearest] > self.config.pick_position_tolerance:
            return None, "no object at the pick position"
        obj = self.objects[nearest]
        if symmetric_angle_error(theta, obj.theta, obj.shape) > self.config.pick_theta_tolerance:
            return None, f"pick orientation does not fit the {obj.name}"
        return nearest, None

    def _free_slot(self, container: int) -> tuple[float, float]:
        """Where the expert drops the next object: the first of four slots inside the container
        that no object occupies yet (so several objects stay visible)."""
        box = self.containers[container]
        offset = 0.55 * self.config.container_inner_radius
        slots = [(box.x + offset * math.cos(box.theta + k * math.pi / 2 + math.pi / 4),
                  box.y + offset * math.sin(box.theta + k * math.pi / 2 + math.pi / 4)) for k in range(4)]
        for sx, sy in slots:
            if all(math.dist((sx, sy), (o.x, o.y)) > self.config.object_half_size for o in self.objects):
                return sx, sy
        return box.x, box.y

    # ---- scene sampling ----------------------------------------------------------------------
    def _sample_scene(self, rng: np.random.Generator, kind: str) -> tuple[list[Container], list[TableObject], Task]:
        c = self.config
        colors = list(COLORS)
        box_colors = rng.choice(len(colors), size=2, replace=False)
        box_kinds = [CONTAINER_KINDS[int(k)] for k in rng.integers(len(CONTAINER_KINDS), size=2)]
        n_objects = int(rng.integers(c.min_objects, c.max_objects + 1))
        combos = [(col, shp) for col in colors for shp in SHAPES]  # every object is a distinct combo

        if kind == "place_all":
            color = colors[int(rng.integers(len(colors)))]
            n_target = int(rng.integers(2, 4))
            shapes = [SHAPES[int(i)] for i in rng.permutation(len(SHAPES))[:n_target]]
            others = [cs for cs in combos if cs[0] != color]
            picks = rng.choice(len(others), size=max(0, n_objects - n_target), replace=False)
            kinds = [(color, s) for s in shapes] + [others[int(i)] for i in picks]
            targets = list(range(n_target))
        else:
            pool = combos if kind != "rotate" else [cs for cs in combos if cs[1] != "circle"]
            first = pool[int(rng.integers(len(pool)))]
            rest = [cs for cs in combos if cs != first]
            picks = rng.choice(len(rest), size=n_objects - 1, replace=False)
            kinds = [first] + [rest[int(i)] for i in picks]
            targets = [0, 1] if kind == "place_pair" else [0]

        positions = self._sample_positions(rng, n_containers=2, n_objects=len(kinds))
        containers = [
            Container(colors[int(box_colors[i])], box_kinds[i], *positions[i], theta=float(rng.uniform(-math.pi, math.pi)))
            for i in range(2)
        ]
        objects = [
            TableObject(col, shp, *positions[2 + i], theta=float(rng.uniform(-math.pi, math.pi)))
            for i, (col, shp) in enumerate(kinds)
        ]
        # Shuffle objects so that targets are not always drawn first (indices are remapped).
        order = [int(i) for i in rng.permutation(len(objects))]
        objects = [objects[i] for i in order]
        targets = [order.index(t) for t in targets]

        container = int(rng.integers(2)) if kind != "rotate" else None
        template = TEMPLATES[kind][int(rng.integers(len(TEMPLATES[kind])))]
        if kind == "rotate":
            obj = objects[targets[0]]
            degrees = ROTATION_DEGREES[int(rng.integers(len(ROTATION_DEGREES)))]
            task = Task(kind, template.format(obj=obj.name, degrees=degrees), targets, None,
                        goal_theta=wrap_angle(obj.theta + math.radians(degrees)), goal_xy=(obj.x, obj.y))
        else:
            assert container is not None
            words = {"container": containers[container].name, "obj": objects[targets[0]].name}
            if kind == "place_pair":
                words["obj2"] = objects[targets[1]].name
            if kind == "place_all":
                words["color"] = objects[targets[0]].color
            task = Task(kind, template.format(**words), targets, container)
        return containers, objects, task

    def _sample_positions(self, rng: np.random.Generator, n_containers: int, n_objects: int) -> list[tuple[float, float]]:
        """Rejection-sample non-overlapping centres: containers first, then objects."""
        c = self.config
        obj_r = c.object_half_size * math.sqrt(2)  # circumradius of a square: the widest shape
        placed: list[tuple[float, float, float]] = []  # (x, y, radius)
        for i in range(n_containers + n_objects):
            radius = c.container_radius if i < n_containers else obj_r
            margin = radius + 0.01
            for _ in range(2000):
                x = float(rng.uniform(c.x_range[0] + margin, c.x_range[1] - margin))
                y = float(rng.uniform(c.y_range[0] + margin, c.y_range[1] - margin))
                if all(math.dist((x, y), (px, py)) > radius + pr + 0.015 for px, py, pr in placed):
                    placed.append((x, y, radius))
                    break
            else:
                raise RuntimeError(f"tabletop: could not place {n_containers} containers and {n_objects} objects "
                                   "without overlap; lower max_objects or the sizes")
        return [(x, y) for x, y, _ in placed]

    # ---- rendering ---------------------------------------------------------------------------
    def render(self) -> Observation:
        """What the cameras see of the current state: RGB images and their instance-label masks."""
        top, top_labels = self._render_top_canvas(), self._render_top_canvas(labels=True)
        size = (self.config.image_size, self.config.image_size)
        ss = self.config.supersample > 1

        def shrink(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not ss:
                return image, labels
            # Area-average the colours (anti-aliasing); labels take the centre sample of each block.
            return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                    cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))

        obs = Observation(images={})
        if "top" in self.config.cameras:
            obs.images["top"], obs.masks["top"] = shrink(top, top_labels)
        if "front" in self.config.cameras:
            front = self._wall.copy()
            front_labels = np.zeros(top_labels.shape, np.uint16)
            n = self._canvas_px
            cv2.warpPerspective(top, self._front_homography, (n, n), dst=front,
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
            cv2.warpPerspective(top_labels, self._front_homography, (n, n), dst=front_labels,
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_TRANSPARENT)
            obs.images["front"], obs.masks["front"] = shrink(front, front_labels)
        return obs

    def sensor_info(self) -> dict[str, Any]:
        """Masks, calibration (both cameras see the table plane) and success tolerances (Env protocol)."""
        c = self.config
        # Top camera: normalised (u, v) -> table (x, y); u runs along -y, v along -x.
        xr, yr = c.x_range[1] - c.x_range[0], c.y_range[1] - c.y_range[0]
        top = np.array([[0.0, -xr, c.x_range[1]], [-yr, 0.0, c.y_range[1]], [0.0, 0.0, 1.0]])
        # Front camera: normalised -> front canvas pixels -> top canvas pixels -> table.
        n, s = self._canvas_px, self._px_per_m
        top_px_to_table = np.array([[0.0, -1 / s, c.x_range[1]], [-1 / s, 0.0, c.y_range[1]], [0.0, 0.0, 1.0]])
        front = top_px_to_table @ np.linalg.inv(self._front_homography) @ np.diag([n, n, 1.0])
        homographies = {"top": top, "front": front / front[2, 2]}
        return {
            "proprio_names": [],
            "masks": True,
            "calibration": {cam: {"table_homography": homographies[cam].tolist()} for cam in c.cameras},
            "tolerances": {
                "pick_x": c.pick_position_tolerance, "pick_y": c.pick_position_tolerance,
                "pick_theta": c.pick_theta_tolerance,
                # the expert places 3.3 cm from a container's centre, which counts within 6 cm;
                # the rotate task allows 2 cm: 2 cm is a hit for every task
                "place_x": c.rotate_position_tolerance, "place_y": c.rotate_position_tolerance,
                "place_theta": c.rotate_theta_tolerance,
            },
        }

    def _to_px(self, xy: np.ndarray) -> np.ndarray:
        """Table metres (..., 2) -> supersampled top-image pixel coordinates (..., 2) as (col, row)."""
        c = self.config
        col = (c.y_range[1] - xy[..., 1]) * self._px_per_m
        row = (c.x_range[1] - xy[..., 0]) * self._px_per_m
        return np.stack([col, row], axis=-1)

    def _polygon(self, x: float, y: float, theta: float, local: np.ndarray) -> np.ndarray:
        """Fixed-point (shift=4) pixel polygon of ``local`` table-frame vertices posed at (x, y, theta)."""
        cth, sth = math.cos(theta), math.sin(theta)
        world = local @ np.array([[cth, sth], [-sth, cth]]) + np.array([x, y])
        return np.round(self._to_px(world) * 16).astype(np.int32)

    def _render_top_canvas(self, labels: bool = False) -> np.ndarray:
        """The supersampled top view: RGB, or (``labels``) uint16 instance labels drawn with the same
        geometry (0 table, 1 + i container i, 1 + len(containers) + j object j)."""
        c = self.config
        n = self._canvas_px
        if labels:
            canvas = np.zeros((n, n), np.uint16)
            aa = cv2.LINE_8  # exact region edges, no blending of label values
        else:
            canvas = np.empty((n, n, 3), np.uint8)
            canvas[:] = TABLE_RGB
            aa = cv2.LINE_AA
            edge = max(1, n // 96)
            cv2.rectangle(canvas, (0, 0), (n - 1, n - 1), TABLE_EDGE_RGB, edge)
        line = max(1, round(0.012 * self._px_per_m))
        for k, box in enumerate(self.containers):
            color = 1 + k if labels else COLORS[box.color]
            inside = color if labels else CONTAINER_INSIDE_RGB
            r = c.container_radius
            if box.kind == "bowl":
                centre = tuple(int(v) for v in np.round(self._to_px(np.array([box.x, box.y])) * 16).astype(np.int32))
                radius_px = round((r - 0.006) * self._px_per_m * 16)
                cv2.circle(canvas, centre, radius_px, inside, -1, aa, 4)
                cv2.circle(canvas, centre, radius_px, color, line, aa, 4)
            else:
                sq = (r - 0.006) * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
                poly = self._polygon(box.x, box.y, box.theta, sq)
                cv2.fillPoly(canvas, [poly], inside, aa, 4)
                cv2.polylines(canvas, [poly], True, color, line, aa, 4)
        h = c.object_half_size
        outline = max(1, n // 192)
        for i in self._draw_order:
            obj = self.objects[i]
            color = 1 + len(self.containers) + i if labels else COLORS[obj.color]
            dark = color if labels else tuple(int(v * 0.55) for v in color)
            if obj.shape == "circle":
                centre = tuple(int(v) for v in np.round(self._to_px(np.array([obj.x, obj.y])) * 16).astype(np.int32))
                radius_px = round(h * 1.1 * self._px_per_m * 16)  # same area as the square, roughly
                cv2.circle(canvas, centre, radius_px, color, -1, aa, 4)
                cv2.circle(canvas, centre, radius_px, dark, outline, aa, 4)
                continue
            if obj.shape == "square":
                local = h * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
            else:  # equilateral triangle, circumradius 1.35 h, one vertex along the object's +x axis
                ang = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
                local = 1.35 * h * np.stack([np.cos(ang), np.sin(ang)], axis=1)
            poly = self._polygon(obj.x, obj.y, obj.theta, local)
            cv2.fillPoly(canvas, [poly], color, aa, 4)
            cv2.polylines(canvas, [poly], True, dark, outline, aa, 4)
        return canvas

    def _top_to_front_homography(self) -> np.ndarray:
        """3x3 map from supersampled top-image pixels to front-image pixels (pinhole camera)."""
        c = self.config
        eye = np.array(c.front_camera_position, dtype=np.float64)
        target = np.array([*c.front_camera_target, 0.0])
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rotation = np.stack([right, down, forward])  # world -> camera (x right, y down, z forward)
        n = self._canvas_px
        focal = (n / 2) / math.tan(math.radians(c.front_camera_fov_deg) / 2)
        intrinsics = np.array([[focal, 0, n / 2], [0, focal, n / 2], [0, 0, 1]])
        # Table plane z = 0: [u v w]^T = K [r1 r2 t] [x y 1]^T.
        t = -rotation @ eye
        plane_to_front = intrinsics @ np.column_stack([rotation[:, 0], rotation[:, 1], t])
        # Top pixel (col, row) -> table (x, y): x = x_max - row / s, y = y_max - col / s.
        s = self._px_per_m
        top_to_plane = np.array([[0, -1 / s, c.x_range[1]], [-1 / s, 0, c.y_range[1]], [0, 0, 1]])
        # Pixel centres: OpenCV samples pixel (i, j) at integer coordinates on both sides.
        h = plane_to_front @ top_to_plane
        return h / h[2, 2]

    def _render_wall(self) -> np.ndarray:
        """The front camera's background: a vertical gradient (wall above, floor below)."""
        n = self._canvas_px
        ramp = np.linspace(0.0, 1.0, n)[:, None, None]
        wall = (1 - ramp) * np.array(WALL_TOP_RGB) + ramp * np.array(WALL_BOTTOM_RGB)
        return np.ascontiguousarray(np.broadcast_to(wall, (n, n, 3)).astype(np.uint8))


def scene_summary(env: TabletopEnv) -> dict[str, Any]:
    """A JSON-friendly description of the current scene (episode metadata, debugging)."""
    task = env._require_task()
    return {
        "task": task.kind,
        "instruction": task.instruction,
        "objects": [dataclasses.asdict(o) for o in env.objects],
        "containers": [dataclasses.asdict(b) for b in env.containers],
        "targets": [env.objects[i].name for i in task.targets],
        "container": None if task.container is None else env.containers[task.container].name,
    }
