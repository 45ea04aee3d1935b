# shellcheck shell=bash
# A real S3-compatible server for the tests: SeaweedFS's weed, built from
# the Go module proxy, run on 127.0.0.1 with a data dir of its own. Source
# this file, then:
#
#   s3_start   build weed once (cached in $FEDPLANE_CACHE, default
#              ~/.cache/fedplane), start it, wait until S3 answers, create
#              a bucket, and export FEDPLANE_TEST_S3=s3://bucket/prefix plus
#              AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#              and AWS_REGION, which the tests and the director read
#   s3_stop    stop it and remove its data
#
# `go install` refuses SeaweedFS (its go.mod has replace directives), so
# the module is downloaded and built as a main module of its own. The
# first build is long (about 35 minutes, downloads included, on a busy
# 2 vCPU VM); later runs reuse the binary.
# Nothing of SeaweedFS is kept in this repository.

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

# s3_weed prints the path of the weed binary, building it when missing.
s3_weed() {
	local cache="${FEDPLANE_CACHE:-$HOME/.cache/fedplane}"
	local bin="$cache/weed-$SEAWEEDFS_VERSION"
	if [ -x "$bin" ]; then
		echo "$bin"
		return
	fi
	mkdir -p "$cache"
	echo "s3.sh: building SeaweedFS weed $SEAWEEDFS_VERSION into $bin (a few minutes, once)" >&2
	local src
	src=$(go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || return 1
	if [ -z "$src" ]; then
		echo "s3.sh: go mod download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION gave no folder" >&2
		return 1
	fi
	local work
	work=$(mktemp -d)
	cp -r "$src" "$work/src" && chmod -R u+w "$work/src" &&
		(cd "$work/src" && GOFLAGS=-buildvcs=false go build -o "$bin.tmp" ./weed) &&
		mv "$bin.tmp" "$bin"
	local rc=$?
	rm -rf "$work" "$bin.tmp"
	[ $rc -eq 0 ] || return $rc
	echo "$bin"
}

# s3_free_ports prints n TCP ports free on 127.0.0.1 now.
s3_free_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# s3_answers reports whether an HTTP server answers on 127.0.0.1:$1.
s3_answers() {
	local reply
	reply=$({ exec 3<>"/dev/tcp/127.0.0.1/$1" &&
		printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
		timeout 5 head -c 12 <&3; } 2>/dev/null)
	[[ "$reply" == HTTP/1.* ]]
}

s3_start() {
	local weed
	weed=$(s3_weed) || return 1
	S3_DIR=$(mktemp -d)
	local ports
	read -r -a ports <<<"$(s3_free_ports 8)" || return 1
	local master=${ports[0]} master_grpc=${ports[1]} volume=${ports[2]} volume_grpc=${ports[3]}
	local filer=${ports[4]} filer_grpc=${ports[5]} s3=${ports[6]} s3_grpc=${ports[7]}
	local key secret
	key="fedplane$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
	secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
	cat >"$S3_DIR/s3.json" <<EOF
{"identities": [{"name": "fedplane-test",
  "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
	mkdir -p "$S3_DIR/data"
	# Telemetry is off: a test server reports nothing anywhere.
	"$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$S3_DIR/data" \
		-master.port="$master" -master.port.grpc="$master_grpc" -master.telemetry=false \
		-master.volumeSizeLimitMB=256 -volume.max=16 \
		-volume.port="$volume" -volume.port.grpc="$volume_grpc" \
		-filer -filer.port="$filer" -filer.port.grpc="$filer_grpc" -filer.localSocket="$S3_DIR/filer.sock" \
		-s3 -s3.port="$s3" -s3.port.grpc="$s3_grpc" -s3.port.iceberg=0 -s3.port.lance=0 \
		-s3.localSocket="$S3_DIR/s3.sock" -s3.config="$S3_DIR/s3.json" \
		>"$S3_DIR/weed.log" 2>&1 &
	S3_PID=$!
	local i
	for i in $(seq 1 120); do
		if s3_answers "$s3"; then
			break
		fi
		if ! kill -0 "$S3_PID" 2>/dev/null; then
			echo "s3.sh: weed exited; its log:" >&2
			tail -50 "$S3_DIR/weed.log" >&2
			return 1
		fi
		sleep 0.5
	done
	local bucket=fedplane-test
	for i in $(seq 1 60); do
		if echo "s3.bucket.create -name $bucket" | "$weed" shell -master="127.0.0.1:$master.$master_grpc" >>"$S3_DIR/shell.log" 2>&1 &&
			echo "s3.bucket.list" | "$weed" shell -master="127.0.0.1:$master.$master_grpc" 2>>"$S3_DIR/shell.log" | grep -q "$bucket"; then
			break
		fi
		if [ "$i" -eq 60 ]; then
			echo "s3.sh: could not create bucket $bucket; shell log:" >&2
			tail -30 "$S3_DIR/shell.log" >&2
			return 1
		fi
		sleep 0.5
	done
	export FEDPLANE_TEST_S3="s3://$bucket/ci"
	export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$s3"
	export AWS_ACCESS_KEY_ID="$key"
	export AWS_SECRET_ACCESS_KEY="$secret"
	export AWS_REGION=us-east-1
	echo "s3.sh: SeaweedFS S3 on $AWS_ENDPOINT_URL_S3, bucket $bucket (FEDPLANE_TEST_S3=$FEDPLANE_TEST_S3)" >&2
}

s3_stop() {
	if [ -n "${S3_PID:-}" ]; then
		kill "$S3_PID" 2>/dev/null
		wait "$S3_PID" 2>/dev/null
		S3_PID=
	fi
	if [ -n "${S3_DIR:-}" ]; then
		rm -rf "$S3_DIR"
		S3_DIR=
	fi
	unset FEDPLANE_TEST_S3 AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
}
