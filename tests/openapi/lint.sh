#!/usr/bin/env bash
# Lints docs/openapi.yaml with the Redocly CLI pinned in package-lock.json (CTest: openapi_lint).
# Usage: tests/openapi/lint.sh [openapi.yaml]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
document="${1:-$here/../../docs/openapi.yaml}"

if [ ! -x "$here/node_modules/.bin/redocly" ]; then
  echo "lint.sh: $here/node_modules has no redocly: run npm ci --prefix tests/openapi" >&2
  exit 1
fi
# No telemetry or update check: CI must not call out, and their notices are noise.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec "$here/node_modules/.bin/redocly" lint --config "$here/redocly.yaml" "$document"
