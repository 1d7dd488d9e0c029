# Shared set-up for scripts/serve and scripts/test: a virtualenv in .venv, and
# Debian packages installed with apt-get when they are missing (as root, or via sudo).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${TELLER_VENV:-$ROOT/.venv}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # apt_install PACKAGE... : installs those not installed yet.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

check_python() {
  if ! command -v "$PYTHON" >/dev/null; then
    apt_install python3 python3-venv
  fi
  "$PYTHON" - <<'PY' || { echo "Teller needs Python 3.11 or newer" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
  if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
    apt_install python3-venv
  fi
}

ensure_venv() {
  # ensure_venv EXTRAS : a virtualenv with Teller installed (editable) with those extras.
  local extras="$1"
  check_python
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.teller-installed-$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing Teller and its Python packages into $VENV ..." >&2
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
           "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"; } >"$VENV/install.log" 2>&1; then
      cat "$VENV/install.log" >&2
      echo "installation failed; the log is in $VENV/install.log" >&2
      exit 1
    fi
    touch "$stamp"
  fi
}
