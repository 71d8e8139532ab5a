#!/bin/bash
# The main job, from a fresh Debian 12 machine: install the dependencies,
# build, and run the demo (scripts/demo.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh
bash scripts/build.sh build
exec bash scripts/demo.sh
