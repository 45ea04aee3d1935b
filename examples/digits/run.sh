#!/usr/bin/env bash
# fedplane digits example: a director and three envoys on this machine train
# the small PyTorch network of examples/digits/job together by FedAvg on
# scikit-learn's handwritten digits, split across the sites by label; then the
# results are downloaded and compare.py scores the federated model against
# the same network trained centrally on all the data, on a held-out test split.
#
#   make demo-digits              builds bin/* and runs this
#   KEEP=1 make demo-digits       keeps the workspace (logs, databases, results)
#   ROUNDS=3 make demo-digits     fewer rounds than job.json's (a copy of the job is submitted)
#
# Needs bin/director, bin/envoy, bin/fladmin (make build) and a python3 with
# torch and scikit-learn (Debian: apt-get install python3-torch python3-sklearn).
# It shares examples/federation.sh with examples/demo.sh.
# Exit status 0 only when the job finished and the federated model's test
# accuracy is at least MIN_ACCURACY (0.5; ten digits make chance 0.1).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SITES=3
MIN_ACCURACY=${MIN_ACCURACY:-0.5}   # the federated test accuracy to pass; override to test
ROUNDS=${ROUNDS:-}                  # empty: job.json's rounds
JOB_DIR=examples/digits/job

# shellcheck source=examples/federation.sh
. examples/federation.sh

# The first python3 in PATH may lack torch (a pyenv or a venv) where
# /usr/bin/python3 has Debian's; take the first that has both, and put its
# folder first in the envoys' PATH, which the job's "python3" is looked up in.
PYTHON=""
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import torch, sklearn' 2>/dev/null; then
		PYTHON=$(command -v "$p")
		break
	fi
done
[[ -n $PYTHON ]] || fail "no python3 with torch and scikit-learn: apt-get install python3-torch python3-sklearn"
ENVOY_PATH=$(dirname "$PYTHON"):$PATH
if [[ -n $ROUNDS && ! $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
	fail "ROUNDS must be a whole number of at least 1, got $ROUNDS"
fi

fed_init digits "$PYTHON"
fed_ports
fed_pki

step "3b. Data: a held-out test split and $SITES shards split by label (examples/digits/make_shards.py)"
"$PYTHON" examples/digits/make_shards.py --sites "$SITES" --out "$WS/shards"

fed_start "digits shard" "$ENVOY_PATH"
fed_wait_online

if [[ -n $ROUNDS ]]; then
	cp -r "$JOB_DIR" "$WS/job"
	"$PYTHON" - "$WS/job/job.json" "$ROUNDS" <<'EOF'
import json
import sys

path, rounds = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    job = json.load(f)
job["rounds"] = rounds
with open(path, "w") as f:
    json.dump(job, f, indent=2)
    f.write("\n")
EOF
	JOB_DIR=$WS/job
fi
fed_submit "$JOB_DIR"
fed_run_job

step "10. Federated vs central on the held-out test split (examples/digits/compare.py)"
run "$PYTHON" examples/digits/compare.py --shards "$WS/shards" --results "$RESULTS" --json "$WS/accuracy.json"
"$PYTHON" - "$WS/accuracy.json" "$MIN_ACCURACY" <<'EOF'
import json
import sys

path, want = sys.argv[1], float(sys.argv[2])
with open(path) as f:
    acc = json.load(f)["federated"]
if acc < want:
    sys.exit("FAIL: the federated model's test accuracy %.4f is below %.2f" % (acc, want))
print("PASS: the federated model's test accuracy %.4f is at least %.2f" % (acc, want))
EOF

step "11. Stopping the federation"
stop_all
echo "digits example passed in ${SECONDS}s"
