#!/usr/bin/env bash
# Prepare, on a machine with network and the demo corpus, what bench/gpu_check.sh needs on the GPU
# machine (no network, no apt, no espeak-ng there): ignored folders that the device call carries.
#
#   bash bench/gpu_prepare.sh        # PY=.venv/bin/python by default: lorakit's environment
#
#   .whl/       wheels of bench/gpu_wheels.txt for CPython 3.12 on x86-64 Linux (~11 MB)
#   .gpu_data/  demo/ (a seeded subset of data/demo, FLAC) and cache/ (tiny.en's tokenizer, no weights)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for path in /.whl/ /.gpu_data/; do
  grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
done
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_5_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl -r bench/gpu_wheels.txt
"$PY" bench/gpu_data.py check-wheels ${GPU_PREINSTALLED:+--preinstalled "$GPU_PREINSTALLED"}
"$PY" bench/gpu_data.py subset "$@"
for path in .whl .gpu_data; do git check-ignore -q "$path" || { echo "gpu_prepare: .whl or .gpu_data is not ignored" >&2; exit 1; }; done
du -sh .whl .gpu_data
du -sch .whl .gpu_data | tail -1
