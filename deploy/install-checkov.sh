#!/usr/bin/env bash
# Install checkov into its own virtual environment (its pins clash with the project's), once.
# Idempotent: does nothing when the pinned version is already there. Used by CI before the tests.
set -euo pipefail
VERSION="${CHECKOV_VERSION:-3.3.30}"
VENV="${CHECKOV_VENV:-/tmp/checkov-venv}"
if [[ -x "$VENV/bin/checkov" ]] && [[ "$("$VENV/bin/checkov" --version 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$VERSION"
"$VENV/bin/checkov" --version
