#!/usr/bin/env bash
# Security scan of the Dockerfile, the Kubernetes manifests and the Terraform, offline.
# checkov lives in its own virtual environment because its pinned dependencies clash with the
# project's; install it once with:
#   python3 -m venv /tmp/checkov-venv && /tmp/checkov-venv/bin/pip install checkov==3.3.30
# Configuration and the justified skips: .checkov.yaml at the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV="${CHECKOV:-}"
if [[ -z "$CHECKOV" ]]; then
  if command -v checkov >/dev/null 2>&1; then
    CHECKOV="$(command -v checkov)"
  elif [[ -x /tmp/checkov-venv/bin/checkov ]]; then
    CHECKOV=/tmp/checkov-venv/bin/checkov
  else
    echo "checkov not found: python3 -m venv /tmp/checkov-venv && /tmp/checkov-venv/bin/pip install checkov==3.3.30" >&2
    exit 127
  fi
fi
# No network: never fetch the policy bundle or the guidelines, never upload.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
exec "$CHECKOV" --config-file .checkov.yaml "$@"
