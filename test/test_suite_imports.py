"""The test suite imports the way launch_testing's pytest plugin imports it.

On a ROS 2 install `colcon test` loads launch_testing's plugin, which imports every test module
itself with `_pytest.pathlib.import_path(path, root=None)`: prepend mode, each module a
top-level module outside any package. A relative import (`from .conftest import ...`) then
fails and the whole suite stops at collection. This test imports every test module that way in
a fresh interpreter (after the root conftest, as pytest would), so the failure shows here too,
where launch_testing is not installed.
"""

import subprocess
import sys
from pathlib import Path

TEST_ROOT = Path(__file__).resolve().parent

_IMPORT_ALL = r"""
import importlib.util, sys, traceback
from pathlib import Path
import pytest
from _pytest.outcomes import Skipped
from _pytest.pathlib import import_path

root = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("root_conftest", root / "conftest.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))  # what pytest loads first
failures = []
for path in sorted(root.rglob("test_*.py")):
    try:
        import_path(path, root=None, consider_namespace_packages=False)
    except Skipped:
        pass  # e.g. test_launch.py without launch_testing: skipped, as under pytest
    except Exception:
        failures.append(f"{path.relative_to(root)}: {traceback.format_exc(limit=1).strip().splitlines()[-1]}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"""


def test_every_test_module_imports_outside_a_package():
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL, str(TEST_ROOT)], capture_output=True, text=True,
                            timeout=240, cwd=TEST_ROOT.parent)
    assert result.returncode == 0, f"test modules that launch_testing's plugin cannot import:\n{result.stdout}" \
                                   f"{result.stderr[-2000:]}"
