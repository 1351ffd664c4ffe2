#!/usr/bin/env bash
# Astra for ROS 2 -- the ManiSkill3 backend (astra_sim/maniskill.py): `make sim-maniskill`.
#
# Installs, on top of the base setup (scripts/setup.sh, which `make` runs first):
#   1. system   a Vulkan driver SAPIEN can use without a GPU: Mesa's lavapipe >= 24. Debian 12's
#               own Mesa 22 lacks descriptorBindingPartiallyBound, so on bookworm the
#               bookworm-backports source is added and mesa-vulkan-drivers + libvulkan1 come
#               from there (Mesa 25); newer distributions take their own packages.
#   2. python   mani-skill (brings sapien, mplib, gymnasium) into the project venv, with the
#               venv's constraints file: torch stays pinned (an unpinned install pulls GBs of
#               CUDA wheels) and numpy stays < 2 (mplib's motion planner segfaults with numpy 2)
#   3. check    build PickCube-v1 with both cameras and render one step on the CPU
#
# Only tasks whose assets ship inside the wheel are used (PickCube, PushCube, StackCube): nothing
# is downloaded at run time. Each stage is skipped when its stamp says it is done, so a second run
# takes about a second. Knobs: ASTRA_VENV (default <repo>/.venv), ASTRA_SETUP_FORCE=1 (redo all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTRA_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.astra_stamps"
CONSTRAINTS="$VENV/constraints.txt"
PY="$VENV/bin/python"

APT_PACKAGES=(mesa-vulkan-drivers libvulkan1)
MIN_MESA_MAJOR=24
BACKPORTS_LIST=/etc/apt/sources.list.d/astra-bookworm-backports.sources
PY_DEPS=("mani-skill>=3.0,<3.1")

T0=$SECONDS
stage() { printf '\n==> [sim-maniskill %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
info()  { printf '    %s\n' "$*"; }
die()   { printf '\nERROR (sim-maniskill): %s\n' "$*" >&2; exit 1; }
hash_stdin() { sha256sum | cut -d' ' -f1; }
stamp_ok()  { [[ "${ASTRA_SETUP_FORCE:-0}" != 1 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  die "need root for: $* (run it by hand, then re-run this target)"; fi; }
mesa_major() {  # major version of the installed mesa-vulkan-drivers, 0 if none
  local v
  v="$(dpkg-query -W -f='${Status} ${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
  [[ "$v" == "install ok installed "* ]] || { echo 0; return; }
  v="${v#install ok installed }"; v="${v#*:}"   # drop an epoch
  echo "${v%%.*}"
}
vulkan_ok() {
  (( $(mesa_major) >= MIN_MESA_MAJOR )) &&
    dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q 'install ok installed'
}

[[ -x "$PY" && -f "$CONSTRAINTS" ]] || die "no project venv at $VENV: run 'make setup' first"

# ---- 1. system packages ---------------------------------------------------------------------
stage "1/3 system: Mesa Vulkan (lavapipe) >= $MIN_MESA_MAJOR + Vulkan loader"
if vulkan_ok; then
  info "installed (mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers))"
else
  command -v apt-get >/dev/null || die "no apt-get: install Mesa >= $MIN_MESA_MAJOR Vulkan drivers + libvulkan1 by hand"
  CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  APT_TARGET=()
  if [[ "$CODENAME" == bookworm ]]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      info "adding $BACKPORTS_LIST"
      as_root tee "$BACKPORTS_LIST" >/dev/null <<'EOF'
# Added by Astra's scripts/setup_maniskill.sh: Mesa >= 24 for ManiSkill's Vulkan renderer.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    APT_TARGET=(-t bookworm-backports)
  fi
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${APT_TARGET[@]}" "${APT_PACKAGES[@]}"
  vulkan_ok || die "mesa-vulkan-drivers is $(mesa_major).x after the install; ManiSkill needs >= $MIN_MESA_MAJOR"
  info "mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
fi

# ---- 2. Python packages ---------------------------------------------------------------------
stage "2/3 Python: ${PY_DEPS[*]} (constraints: $CONSTRAINTS)"
DEPS_HASH="$(printf '%s\n' "${PY_DEPS[@]}" | cat - "$CONSTRAINTS" | hash_stdin)"
if stamp_ok sim-maniskill-deps "$DEPS_HASH" && "$PY" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("mani_skill", "mplib")))'; then
  info "up to date"
else
  "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "${PY_DEPS[@]}"
  "$PY" -c 'import numpy, torch; assert numpy.__version__ < "2", numpy.__version__; print("    numpy", numpy.__version__, "torch", torch.__version__)'
  stamp_set sim-maniskill-deps "$DEPS_HASH"
  rm -f "$STAMPS/sim-maniskill-check"
fi

# ---- 3. check -------------------------------------------------------------------------------
stage "3/3 check: PickCube-v1, two cameras, one step"
CHECK_HASH="$(printf '%s\n' "$DEPS_HASH" "$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)" | hash_stdin)"
if stamp_ok sim-maniskill-check "$CHECK_HASH"; then
  info "passed before"
else
  (
    cd /
    OMP_NUM_THREADS=1 "$PY" - <<'EOF'
import numpy as np
from astra_sim.maniskill import ManiSkillConfig, ManiSkillEnv
env = ManiSkillEnv(ManiSkillConfig(task="PickCube-v1"))
obs, instruction = env.reset(0)
obs = env.step(env.expert_action()).observation
for name, image in obs.images.items():
    assert image.dtype == np.uint8 and image.std() > 0, f"blank {name} image: Vulkan rendering does not work"
print(f"    '{instruction}', cameras {list(obs.images)} {next(iter(obs.images.values())).shape}")
env.close()
EOF
  ) || die "ManiSkill check failed (see above)"
  stamp_set sim-maniskill-check "$CHECK_HASH"
fi
stage "done in $((SECONDS - T0)) s"
