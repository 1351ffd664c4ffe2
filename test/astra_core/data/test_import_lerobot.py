"""LeRobot import: v2.1 and v3.0 folders written here (pyarrow + PyAV), imported and checked.

Actions and state must come through exactly (float32 in the source, float64 in the dataset);
video is lossy, so frames are checked against the source within a tolerance and, stronger, to be
nearer to the right source frame than to its neighbours (a frame-offset bug would fail that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from astra_core.configuration import ConfigError, from_dict
from astra_core.data import TrajectoryWindowDataset, load_dataset_info
from astra_core.data import format as fmt
from astra_core.data.import_lerobot import LeRobotMapping, import_lerobot, main as import_main
from astra_core.data.import_mapping import MappingError, load_mapping
from astra_core.data.lerobot_format import LeRobotError
from astra_core.data.validate import validate_dataset
from astra_core.geometry import normalize_quaternion, quaternion_to_rpy
from astra_core.imaging import resize_rgb

import lerobot_factory as lf

REPO = Path(__file__).resolve().parents[3]


def mapping(**changes) -> LeRobotMapping:
    return from_dict(LeRobotMapping, {**json.loads(json.dumps(lf.LEROBOT_MAPPING)), **changes})


def expected_action(episode: int, index: int) -> np.ndarray:
    a = lf.action(episode, index).astype(np.float64)
    rpy = quaternion_to_rpy(*normalize_quaternion(*a[3:7], tolerance=0.01))
    return np.array([a[0], a[1], a[2], *rpy, a[7]])


def steps(root: Path, episode: int) -> dict[str, np.ndarray]:
    with np.load(fmt.episode_dir(root, episode) / fmt.STEPS_FILE, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def frames(root: Path, episode: int) -> np.ndarray:
    item = TrajectoryWindowDataset(root, window=1000, episodes=[episode])[0]
    return item["images"][: int(item["step_mask"].sum())].numpy()


def check_frames(got: np.ndarray, episode: int, camera: int, length: int, atol: float = 6.0) -> None:
    for i in range(length):
        error = lambda j: np.abs(got[i].astype(int) - lf.frame(episode, j, camera).astype(int)).mean()
        assert error(i) < atol, (episode, i, error(i))
        for j in (i - 1, i + 1):  # the right frame, not a neighbour
            if 0 <= j < length:
                assert error(i) < error(j), (episode, i, j, error(i), error(j))


@pytest.mark.parametrize("layout", ["v2.1", "v3.0"])
def test_lerobot_layouts_import(tmp_path, layout):
    write = lf.write_v21 if layout == "v2.1" else lf.write_v30  # v2.1 as H.264, v3.0 as AV1 (LeRobot's default)
    written = write(tmp_path / "lerobot")
    report = import_lerobot(written.root, mapping(), tmp_path / "ds", progress=False)
    assert report.ok, report.summary()
    assert validate_dataset(tmp_path / "ds")["ok"]
    info = load_dataset_info(tmp_path / "ds")
    assert info.cameras == ["top", "wrist"] and info.image_size == lf.SIZE and info.control_rate_hz == written.fps
    assert info.proprio_names == lf.STATE_NAMES and info.metadata["codebase_version"] == layout
    assert [e.instruction for e in info.episodes] == [lf.TASKS[t] for t in written.tasks]
    for e, length in enumerate(written.lengths):
        arrays = steps(tmp_path / "ds", e)
        assert np.array_equal(arrays["actions"], np.stack([expected_action(e, i) for i in range(length)]))  # exact
        assert np.array_equal(arrays["proprio"], np.stack([lf.state(e, i) for i in range(length)]).astype(np.float64))
        assert np.array_equal(arrays["timestamps"], (np.arange(length, dtype=np.float32) / written.fps).astype(np.float64))
        images = frames(tmp_path / "ds", e)
        for m in range(2):
            check_frames(images[:, m], e, m, length)


def test_episode_subset_image_features_and_resize(tmp_path):
    """dtype image (PNG bytes in the parquet rows) is lossless; image_size resizes with resize_rgb."""
    written = lf.write_v21(tmp_path / "lerobot", image_keys=("observation.images.wrist",))
    m = mapping(image_size=[16, 24])
    report = import_lerobot(written.root, m, tmp_path / "ds", episodes=[2, 0], progress=False)
    assert report.ok and [r.source.rsplit(" ", 1)[1] for r in report.episodes] == ["0", "2"]
    assert load_dataset_info(tmp_path / "ds").image_size == (16, 24)
    for episode, source in ((0, 0), (1, 2)):
        images = frames(tmp_path / "ds", episode)
        for i in range(written.lengths[source]):
            assert np.array_equal(images[i, 1], resize_rgb(lf.frame(source, i, 1), (16, 24)))
            assert np.abs(images[i, 0].astype(int) - resize_rgb(lf.frame(source, i, 0), (16, 24)).astype(int)).mean() < 6


def test_bad_episodes_are_reported_and_the_rest_imported(tmp_path, capsys):
    written = lf.write_v21(tmp_path / "lerobot", lengths=(5, 6, 4, 5))
    (written.root / "videos/chunk-000/observation.images.wrist/episode_000001.mp4").unlink()
    data = written.root / "data/chunk-000/episode_000002.parquet"
    table = pq.read_table(data).to_pydict()
    table["action"][3][0] = float("nan")
    pq.write_table(pq.read_table(data).from_pydict(table, schema=pq.read_schema(data)), data)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(yaml.safe_dump(lf.LEROBOT_MAPPING))
    rc = import_main([str(written.root), "--mapping", str(mapping_file), "--out", str(tmp_path / "ds"), "--no-progress"])
    assert rc == 1
    saved = json.loads((tmp_path / "ds" / "import_report.json").read_text())
    status = {e["source"].rsplit(" ", 1)[1]: (e["status"], e["reason"]) for e in saved["episodes"]}
    assert status["0"][0] == status["3"][0] == "written"
    assert status["1"][0] == "failed" and "video 'observation.images.wrist'" in status["1"][1] and "missing" in status["1"][1]
    assert status["2"][0] == "failed" and "action is not finite at frame 3" in status["2"][1]
    info = load_dataset_info(tmp_path / "ds")
    assert [e.num_steps for e in info.episodes] == [5, 5] and validate_dataset(tmp_path / "ds")["ok"]
    assert "2 episode(s) written" in capsys.readouterr().out


def test_video_frame_off_its_timestamp_is_an_error(tmp_path):
    written = lf.write_v30(tmp_path / "lerobot", lengths=(4, 4), codec="libx264")
    episodes = written.root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes).to_pydict()
    table["videos/observation.images.top/from_timestamp"][1] += 0.05  # half a frame off at 10 fps
    pq.write_table(pq.read_table(episodes).from_pydict(table, schema=pq.read_schema(episodes)), episodes)
    report = import_lerobot(written.root, mapping(), tmp_path / "ds", progress=False)
    assert [e.status for e in report.episodes] == ["written", "failed"]
    assert "no frame within 0.025 s of t=0.4500 s" in report.episodes[1].reason


def test_mapping_and_folder_errors(tmp_path):
    written = lf.write_v21(tmp_path / "lerobot", lengths=(3,))
    with pytest.raises(LeRobotError, match=r"feature 'observation.images.side' is not in meta/info.json; features: \["):
        import_lerobot(written.root, mapping(cameras={"side": "observation.images.side"}), tmp_path / "a", progress=False)
    with pytest.raises(MappingError, match=r"the source has 8 elements .* the action needs 7"):
        import_lerobot(written.root, mapping(action={"space": "continuous_pose6d"}), tmp_path / "b", progress=False)
    with pytest.raises(MappingError, match=r"action dimensions \['gripper'\] are not mapped"):
        import_lerobot(written.root, mapping(action={**lf.LEROBOT_MAPPING["action"], "dims": {"x": "x", "y": "y", "z": "z"}}),
                       tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['camera'\]; valid keys: cameras, action, proprio"):
        mapping(camera={})
    (written.root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v1.6"}))
    with pytest.raises(LeRobotError, match="codebase_version 'v1.6' is not supported"):
        import_lerobot(written.root, mapping(), tmp_path / "d", progress=False)
    example = load_mapping(LeRobotMapping, REPO / "config" / "import" / "lerobot_example.yaml")
    assert example.cameras and example.action.feature == "action"
