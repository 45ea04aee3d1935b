#!/usr/bin/env bash
# fedplane demo: a director and three envoys on this machine train the
# logistic regression of examples/logreg together for 10 rounds of FedAvg,
# then the results are downloaded and checked: the global model's accuracy
# must have risen by at least 0.15.
#
#   make demo             builds bin/* and runs this
#   KEEP=1 make demo      keeps the workspace (logs, databases, results)
#
# Needs bin/director, bin/envoy, bin/fladmin (make build) and python3.
# Exit status 0 only when the job finished and the accuracy rose enough.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SITES=3
MIN_GAIN=${MIN_GAIN:-0.15}   # the accuracy gain to pass; override to test
JOB_DIR=examples/logreg/job

# shellcheck source=examples/federation.sh
. examples/federation.sh

command -v python3 >/dev/null || fail "python3 is needed for the example's training code"
fed_init demo python3
fed_ports
fed_pki

step "3b. Data: $SITES non-IID shards (examples/logreg/make_shards.py)"
python3 examples/logreg/make_shards.py --sites "$SITES" --out "$WS/shards"

fed_start "synthetic shard"
fed_wait_online
fed_submit "$JOB_DIR"
fed_run_job

step "10. Verdict: the global model's accuracy must rise by at least $MIN_GAIN"
python3 - "$RESULTS/metrics.csv" "$MIN_GAIN" <<'EOF'
import csv
import sys

path, min_gain = sys.argv[1], float(sys.argv[2])
with open(path, newline="") as f:
    acc = {int(r["round"]): float(r["value"]) for r in csv.DictReader(f)
           if r["origin"] == "aggregator" and r["name"] == "accuracy"}
if len(acc) < 2:
    sys.exit("FAIL: metrics.csv has aggregated accuracy for %d rounds, want at least 2" % len(acc))
first, last = min(acc), max(acc)
gain = acc[last] - acc[first]
print("accuracy: round %d %.4f -> round %d %.4f, gain %+.4f (need %+.2f)"
      % (first, acc[first], last, acc[last], gain, min_gain))
if gain < min_gain:
    sys.exit("FAIL: the accuracy rose by %.4f, less than %.2f" % (gain, min_gain))
print("PASS")
EOF

step "11. Stopping the federation"
stop_all
echo "demo passed in ${SECONDS}s"
