#!/usr/bin/env bash
# Astra for ROS 2 -- the Meta-World backend (astra_sim/metaworld.py): `make sim-metaworld`.
#
# Installs, on top of the base setup (scripts/setup.sh, which `make` runs first):
#   1. system   libegl1 libgl1-mesa-dri libosmesa6 (apt): MuJoCo renders headless through EGL
#               (Mesa's software rasteriser; OSMesa is the fallback for MUJOCO_GL=osmesa)
#   2. python   metaworld (brings mujoco 3 and gymnasium) into the project venv, with the
#               venv's constraints file (torch pinned, numpy<2)
#   3. check    build one Meta-World task and render one frame with MUJOCO_GL=egl
#
# Each stage is skipped when its stamp (a hash of its inputs) says it is done, so a second run
# takes about a second. Knobs: ASTRA_VENV (default <repo>/.venv), ASTRA_SETUP_FORCE=1 (redo all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTRA_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.astra_stamps"
CONSTRAINTS="$VENV/constraints.txt"
PY="$VENV/bin/python"

APT_PACKAGES=(libegl1 libgl1-mesa-dri libosmesa6)
PY_DEPS=("metaworld>=3,<4" packaging)

T0=$SECONDS
stage() { printf '\n==> [sim-metaworld %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
info()  { printf '    %s\n' "$*"; }
die()   { printf '\nERROR (sim-metaworld): %s\n' "$*" >&2; exit 1; }
hash_stdin() { sha256sum | cut -d' ' -f1; }
stamp_ok()  { [[ "${ASTRA_SETUP_FORCE:-0}" != 1 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  die "need root for: $* (run it by hand, then re-run this target)"; fi; }
missing_debs() {  # prints the packages of "$@" that dpkg does not have installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

[[ -x "$PY" && -f "$CONSTRAINTS" ]] || die "no project venv at $VENV: run 'make setup' first"

# ---- 1. system packages ---------------------------------------------------------------------
stage "1/3 system packages: ${APT_PACKAGES[*]}"
mapfile -t MISSING < <(missing_debs "${APT_PACKAGES[@]}")
if ((${#MISSING[@]})); then
  command -v apt-get >/dev/null || die "no apt-get: install the EGL/Mesa GL libraries (${MISSING[*]}) by hand"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${MISSING[@]}"
else
  info "installed"
fi

# ---- 2. Python packages ---------------------------------------------------------------------
stage "2/3 Python: ${PY_DEPS[*]} (constraints: $CONSTRAINTS)"
DEPS_HASH="$(printf '%s\n' "${PY_DEPS[@]}" | cat - "$CONSTRAINTS" | hash_stdin)"
if stamp_ok sim-metaworld-deps "$DEPS_HASH" && "$PY" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("metaworld",)))'; then
  info "up to date"
else
  "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "${PY_DEPS[@]}"
  stamp_set sim-metaworld-deps "$DEPS_HASH"
  rm -f "$STAMPS/sim-metaworld-check"
fi

# ---- 3. check -------------------------------------------------------------------------------
stage "3/3 check: one task, one EGL frame"
CHECK_HASH="$(printf '%s\n' "$DEPS_HASH" "${APT_PACKAGES[@]}" | hash_stdin)"
if stamp_ok sim-metaworld-check "$CHECK_HASH"; then
  info "passed before"
else
  (
    cd /
    MUJOCO_GL=egl OMP_NUM_THREADS=1 "$PY" - <<'EOF'
import mujoco, numpy as np
from astra_sim.metaworld import MetaWorldConfig, MetaWorldEnv
env = MetaWorldEnv(MetaWorldConfig(task="reach"))
obs, instruction = env.reset(0)
frame = next(iter(obs.images.values()))
assert frame.dtype == np.uint8 and frame.std() > 0, "blank frame: EGL rendering does not work"
print(f"    mujoco {mujoco.__version__}: '{instruction}', {list(obs.images)} {frame.shape}")
env.close()
EOF
  ) || die "Meta-World check failed (see above)"
  stamp_set sim-metaworld-check "$CHECK_HASH"
fi
stage "done in $((SECONDS - T0)) s"
