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
# This script is examples/demo.sh with the digits job and the comparison.
# Exit status 0 only when the job finished and the federated model's test
# accuracy is at least MIN_ACCURACY (0.5; ten digits make chance 0.1).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SITES=3
MIN_ACCURACY=${MIN_ACCURACY:-0.5}   # the federated test accuracy to pass; override to test
ROUNDS=${ROUNDS:-}                  # empty: job.json's rounds
JOB_DIR=examples/digits/job

PIDS=()   # every process this script started
FG=""     # the long-running fladmin command in progress, if any
JOB=""    # the submitted job's id, once known
WS=""     # the workspace

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

# run runs a long command and waits for it. Running it in the background lets
# a signal to this script (Ctrl-C, a CI timeout) be handled at once instead of
# when the command returns; its exit status is the command's.
run() {
	"$@" &
	FG=$!
	wait "$FG"
	FG=""
}

# cleanup runs on every exit: on a failure it shows what went wrong, then it
# stops every process started here and removes the workspace.
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if [[ -n $FG ]]; then
		kill -TERM "$FG" 2>/dev/null || true
		wait "$FG" 2>/dev/null || true
	fi
	if [[ $status -ne 0 && -n $WS ]]; then
		if [[ -n $JOB ]]; then
			printf '\n--- fladmin show-job %s\n' "$JOB" >&2
			bin/fladmin --timeout 5s show-job "$JOB" >&2 || true
		fi
	fi
	stop_all
	if [[ $status -ne 0 && -n $WS ]]; then
		local log
		for log in "$WS"/director.log "$WS"/envoy-*.log; do
			[[ -f $log ]] || continue
			printf '\n--- last 30 lines of %s\n' "$log" >&2
			tail -n 30 "$log" >&2
		done
	fi
	if [[ -n $WS ]]; then
		if [[ ${KEEP:-0} == 1 ]]; then
			printf '\nWorkspace kept: %s\n' "$WS"
		else
			rm -rf "$WS"
		fi
	fi
	exit "$status"
}

# stop_all sends SIGTERM to every process started here, waits up to 20s for
# them, then SIGKILLs the rest.
stop_all() {
	local pid i alive
	((${#PIDS[@]})) || return 0
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for ((i = 0; i < 200; i++)); do
		alive=0
		for pid in "${PIDS[@]}"; do
			if kill -0 "$pid" 2>/dev/null; then alive=1; fi
		done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "process $pid ignored SIGTERM for 20s: killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for b in director envoy fladmin; do
	[[ -x bin/$b ]] || fail "bin/$b is missing: run make build (or make demo)"
done
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

step "1. Workspace"
WS=$(mktemp -d "${TMPDIR:-/tmp}/fedplane-digits.XXXXXX")
echo "$WS"

step "2. Free loopback ports"
# Bind both at once so that they differ; the director binds them again a moment later.
ports=$("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
read -r GRPC ADMIN <<<"$ports"
[[ ${GRPC:-} =~ ^[0-9]+$ && ${ADMIN:-} =~ ^[0-9]+$ ]] || fail "could not pick free ports: $ports"
echo "director gRPC 127.0.0.1:$GRPC, admin 127.0.0.1:$ADMIN"
export FLADMIN_ADDR=127.0.0.1:$ADMIN

step "3. Certificates: a CA for this federation, mutual TLS everywhere (director pki)"
PKI=$WS/pki
bin/director pki init --dir "$PKI" >/dev/null
bin/director pki issue --dir "$PKI" --kind director --name director --host 127.0.0.1 >/dev/null
bin/director pki issue --dir "$PKI" --kind admin --name demo-admin --role project_admin --org demo >/dev/null
for ((i = 1; i <= SITES; i++)); do
	bin/director pki issue --dir "$PKI" --kind envoy --name "site-$i" >/dev/null
done
tls() { echo "--tls-ca $PKI/ca.crt --tls-cert $PKI/$1.crt --tls-key $PKI/$1.key"; }
export FLADMIN_TLS_CA=$PKI/ca.crt FLADMIN_TLS_CERT=$PKI/demo-admin.crt FLADMIN_TLS_KEY=$PKI/demo-admin.key
ls "$PKI"

step "3b. Data: a held-out test split and $SITES shards split by label (examples/digits/make_shards.py)"
"$PYTHON" examples/digits/make_shards.py --sites "$SITES" --out "$WS/shards"

step "4. Director and $SITES envoys (logs in the workspace)"
# shellcheck disable=SC2046 # tls prints flags to split
bin/director serve --data-dir "$WS/director" $(tls director) \
	--grpc-listen "127.0.0.1:$GRPC" --admin-listen "127.0.0.1:$ADMIN" \
	--health-check-period 1s </dev/null >"$WS/director.log" 2>&1 &
PIDS+=($!)
echo "director   pid $!"
# An envoy refuses to run a job's code as root unless told; a demo run as
# root (in a container, say) tells it. A site would give --run-as USER.
root_flag=()
if [ "$(id -u)" -eq 0 ]; then
	root_flag=(--allow-root)
fi
for ((i = 1; i <= SITES; i++)); do
	shard=$WS/shards/site-$i
	samples=$(<"$shard/samples")
	# shellcheck disable=SC2046
	PATH=$ENVOY_PATH bin/envoy start --name "site-$i" --director "127.0.0.1:$GRPC" $(tls "site-$i") \
		--shard-dir "$shard" --samples "$samples" --description "digits shard $i" \
		--work-dir "$WS/envoy-$i" "${root_flag[@]}" </dev/null >"$WS/envoy-$i.log" 2>&1 &
	PIDS+=($!)
	echo "site-$i     pid $!"
done

step "5. Waiting (up to 30s) for $SITES envoys to be online"
online=0
for ((t = 0; t < 60; t++)); do
	online=$(bin/fladmin --timeout 2s -o json list-envoys 2>/dev/null | "$PYTHON" -c '
import json, sys
try:
    envoys = json.load(sys.stdin)
except ValueError:
    envoys = []
if isinstance(envoys, dict):
    envoys = envoys.get("envoys") or []
print(sum(1 for e in envoys if e.get("online")))
') || online=0
	((online >= SITES)) && break
	sleep 0.5
done
((online >= SITES)) || fail "only $online of $SITES envoys came online within 30s"
bin/fladmin list-envoys

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
step "6. Submitting $JOB_DIR"
out=$(bin/fladmin submit-job --no-progress "$JOB_DIR")
echo "$out"
JOB=${out##* }
[[ $out == "Submitted job "* && -n $JOB ]] || fail "could not read the job id from: $out"

step "7. Metrics, round by round (fladmin metrics --follow)"
run bin/fladmin metrics "$JOB" --follow

step "8. Waiting for the job to finish"
run bin/fladmin wait-job "$JOB" --wait-timeout 10m

step "9. Downloading the results"
bin/fladmin download-job "$JOB" -d "$WS/results"
RESULTS=$WS/results/$JOB
for f in job.json status.json metrics.csv models/last.safetensors models/best.safetensors; do
	[[ -s $RESULTS/$f ]] || fail "download-job wrote no $RESULTS/$f"
done
find "$RESULTS" -type f | sort | while read -r f; do
	printf '  %8d  %s\n' "$(wc -c <"$f")" "${f#"$RESULTS"/}"
done

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
