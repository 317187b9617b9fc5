#!/usr/bin/env bash
# GPU check for the Meissonic backbone (generation throughput, Co-GRPO iterations in bf16 with
# gradient checkpointing, peak memory). Runs from the repo root on a bare machine with torch and
# transformers: missing pure-Python wheels (diffusers ...) are taken from .whl/ if present, and the
# repo's packages are used from their src/ folders (no install, no entry points needed).
#
#   bash bench/gpu_check.sh --tiny                       # random Meissonic-shaped model
#   bash bench/gpu_check.sh --tiny --device cpu --hidden 64 --layers 1 --grid 8 --steps 4 --iterations 2
#   bash bench/gpu_check.sh --weights /data/Meissonic [--text-encoder /data/CLIP-ViT-H-14]
#
# Results: stdout, and $OUT/gpu_check.json (+ PNGs) when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${COGRPO_GPU_SITE:-/tmp/cogrpo-gpu-site}

# diffusers 0.42.1 needs huggingface-hub >= 1.32; .whl/fallback/ holds an older diffusers for
# machines whose transformers pins an older hub.
if ! "$PY" -c "from diffusers import VQModel" >/dev/null 2>&1; then
  for wheels in .whl .whl/fallback; do
    compgen -G "$wheels/*.whl" >/dev/null || continue
    rm -rf "$SITE" && "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$wheels"/*.whl
    if PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "from diffusers import VQModel" 2>/tmp/cogrpo-diffusers-import.txt; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
      break
    fi
  done
  if ! "$PY" -c "from diffusers import VQModel" 2>/tmp/cogrpo-diffusers-import.txt; then
    echo "error: diffusers does not import: $(tail -n 1 /tmp/cogrpo-diffusers-import.txt)" >&2
    "$PY" -c "import huggingface_hub, transformers; print('huggingface_hub', huggingface_hub.__version__, 'transformers', transformers.__version__)" >&2 || true
    exit 3
  fi
fi
export PYTHONPATH="packages/core/src:packages/schedulers/src:packages/mdm-meissonic/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
exec "$PY" bench/gpu_check.py "$@"
