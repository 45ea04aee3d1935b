# shellcheck shell=bash
# examples/federation.sh: what the example scripts (demo.sh, digits/run.sh)
# share, sourced by them from the repository's root: a workspace, a director
# and envoys on loopback with mutual TLS, a job followed to its end and its
# results downloaded, and a cleanup that stops every process on any exit.
#
# The sourcing script sets SITES, then calls, in order: fed_init NAME PYTHON,
# fed_ports, fed_pki, (its own shards in $WS/shards/site-N with a samples
# file each), fed_start DESCRIPTION [ENVOY_PATH], fed_wait_online,
# fed_submit DIR, fed_run_job; RESULTS is then the downloaded results.

PIDS=()   # every process this script started
FG=""     # the long-running fladmin command in progress, if any
JOB=""    # the submitted job's id, once known
WS=""     # the workspace
PY=python3

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

# fed_init sets the traps, checks the binaries, takes PYTHON as the python3
# to use, and makes the workspace (a temp dir named after NAME).
fed_init() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local b
	for b in director envoy fladmin; do
		[[ -x bin/$b ]] || fail "bin/$b is missing: run make build"
	done
	PY=$2
	step "1. Workspace"
	WS=$(mktemp -d "${TMPDIR:-/tmp}/fedplane-$1.XXXXXX")
	echo "$WS"
}

# fed_ports picks the director's two loopback ports: GRPC and ADMIN.
fed_ports() {
	step "2. Free loopback ports"
	# Bind both at once so that they differ; the director binds them again a moment later.
	local ports
	ports=$("$PY" -c '
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
}

# fed_pki makes the federation's CA and certificates (director pki) in
# $WS/pki: the director's, an admin's for fladmin, and site-1..site-SITES.
fed_pki() {
	step "3. Certificates: a CA for this federation, mutual TLS everywhere (director pki)"
	PKI=$WS/pki
	bin/director pki init --dir "$PKI" >/dev/null
	bin/director pki issue --dir "$PKI" --kind director --name director --host 127.0.0.1 >/dev/null
	bin/director pki issue --dir "$PKI" --kind admin --name demo-admin --role project_admin --org demo >/dev/null
	local i
	for ((i = 1; i <= SITES; i++)); do
		bin/director pki issue --dir "$PKI" --kind envoy --name "site-$i" >/dev/null
	done
	export FLADMIN_TLS_CA=$PKI/ca.crt FLADMIN_TLS_CERT=$PKI/demo-admin.crt FLADMIN_TLS_KEY=$PKI/demo-admin.key
	ls "$PKI"
}

# tls prints the TLS flags of the certificate named $1.
tls() { echo "--tls-ca $PKI/ca.crt --tls-cert $PKI/$1.crt --tls-key $PKI/$1.key"; }

# fed_start starts the director and one envoy per shard in $WS/shards,
# described as "$1 N"; the envoys' PATH is $2 when given.
fed_start() {
	step "4. Director and $SITES envoys (logs in the workspace)"
	# shellcheck disable=SC2046 # tls prints flags to split
	bin/director serve --data-dir "$WS/director" $(tls director) \
		--grpc-listen "127.0.0.1:$GRPC" --admin-listen "127.0.0.1:$ADMIN" \
		--health-check-period 1s </dev/null >"$WS/director.log" 2>&1 &
	PIDS+=($!)
	echo "director   pid $!"
	# An envoy refuses to run a job's code as root unless told; a demo run as
	# root (in a container, say) tells it. A site would give --run-as USER.
	local root_flag=() i shard samples
	if [ "$(id -u)" -eq 0 ]; then
		root_flag=(--allow-root)
	fi
	for ((i = 1; i <= SITES; i++)); do
		shard=$WS/shards/site-$i
		samples=$(<"$shard/samples")
		# shellcheck disable=SC2046
		PATH=${2:-$PATH} bin/envoy start --name "site-$i" --director "127.0.0.1:$GRPC" $(tls "site-$i") \
			--shard-dir "$shard" --samples "$samples" --description "$1 $i" \
			--work-dir "$WS/envoy-$i" "${root_flag[@]}" </dev/null >"$WS/envoy-$i.log" 2>&1 &
		PIDS+=($!)
		echo "site-$i     pid $!"
	done
}

# fed_wait_online waits up to 30s for SITES envoys to be online.
fed_wait_online() {
	step "5. Waiting (up to 30s) for $SITES envoys to be online"
	local online=0 t
	for ((t = 0; t < 60; t++)); do
		online=$(bin/fladmin --timeout 2s -o json list-envoys 2>/dev/null | "$PY" -c '
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
}

# fed_submit submits the job folder $1 and sets JOB.
fed_submit() {
	step "6. Submitting $1"
	local out
	out=$(bin/fladmin submit-job --no-progress "$1")
	echo "$out"
	JOB=${out##* }
	[[ $out == "Submitted job "* && -n $JOB ]] || fail "could not read the job id from: $out"
}

# fed_run_job follows the job's metrics round by round, waits for its end
# and downloads its results into RESULTS.
fed_run_job() {
	step "7. Metrics, round by round (fladmin metrics --follow)"
	run bin/fladmin metrics "$JOB" --follow

	step "8. Waiting for the job to finish"
	run bin/fladmin wait-job "$JOB" --wait-timeout 10m

	step "9. Downloading the results"
	bin/fladmin download-job "$JOB" -d "$WS/results"
	RESULTS=$WS/results/$JOB
	local f
	for f in job.json status.json metrics.csv models/last.safetensors models/best.safetensors; do
		[[ -s $RESULTS/$f ]] || fail "download-job wrote no $RESULTS/$f"
	done
	find "$RESULTS" -type f | sort | while read -r f; do
		printf '  %8d  %s\n' "$(wc -c <"$f")" "${f#"$RESULTS"/}"
	done
}
