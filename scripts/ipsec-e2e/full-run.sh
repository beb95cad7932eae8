#!/usr/bin/env bash
# The full run of the real-IPsec end-to-end test: 100 churn cycles per
# daemon (CI runs 20), with a deadline to match (about 10 s per cycle and
# daemon in the emulated guest, more on a loaded machine).
#   sudo scripts/ipsec-e2e/full-run.sh [more ipsec-e2e.sh options]
set -euo pipefail
exec "$(cd "$(dirname "$0")/.." && pwd)/ipsec-e2e.sh" --churn 100 --timeout 5400 "$@"
