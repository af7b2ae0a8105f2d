#!/bin/sh
# Serving benchmark of issue 13: lorakit serve (NF4 base of the smollm2-135m shape, from the anchors' random
# GGUF quantised at load) against llama.cpp's llama-server (the same weights in Q4_0, as many slots as clients,
# continuous batching), alternating in the same minutes; base only, and adapters (rank 16 on all seven
# projections) spread over the clients. Prints one JSON line per run (lorakit bench --serve --json) with the
# label in front.
#
#   serve/loadgen/bench.sh [ROUNDS]                 # from the repository root
#
# Environment: LLAMA_BIN (folder of llama-server, default /work/llama/src/build/bin), GGUF (folder of
# smol135-f16.gguf and smol135-q4_0.gguf, default /work/llama/gguf), CLIENTS ("16 64"; empty: none), REQUESTS per client (2),
# GEN new tokens (64), PROMPT tokens (16), THREADS (2), PREFIX=1 to add the prefix-caching run (32 requests
# sharing a 1,000-token prefix, cache on and off, greedy outputs compared, the server's peak RSS after each), LOCK=FILE to take flock FILE around
# each measured run (a machine shared with other benchmarks), ANCHOR=0 to leave llama-server out, LK=BINARY to
# use a lorakit binary built beforehand instead of building one, SERVE_FLAGS for extra `lorakit serve` flags.
set -eu
ROUNDS=${1:-2}
LLAMA_BIN=${LLAMA_BIN:-/work/llama/src/build/bin}
GGUF=${GGUF:-/work/llama/gguf}
CLIENTS=${CLIENTS-16 64}
REQUESTS=${REQUESTS:-2}
GEN=${GEN:-64}
PROMPT=${PROMPT:-16}
THREADS=${THREADS:-2}
PREFIX=${PREFIX:-0}
ANCHOR=${ANCHOR:-1}
LK_PORT=${LK_PORT:-18431}
LC_PORT=${LC_PORT:-18432}

tmp=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

lk=${LK:-}
if [ -z "$lk" ]; then
	go build -o "$tmp/lorakit" ./cmd/lorakit
	lk="$tmp/lorakit"
fi
"$lk" bench --write-adapters 32 --model "$GGUF/smol135-f16.gguf" --out "$tmp/adapters" 2>/dev/null

wait_up() { # URL PID LOG: stop at once (printing the server's log) if PID exits before URL answers
	for _ in $(seq 1 600); do
		curl -sf "$1" >/dev/null 2>&1 && return 0
		if ! kill -0 "$2" 2>/dev/null; then
			echo "server for $1 exited before it came up; its output:" >&2
			cat "$3" >&2
			exit 1
		fi
		sleep 0.5
	done
	echo "server at $1 did not come up" >&2
	exit 1
}

stop_servers() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	pids=""
}

# start_servers SLOTS ADAPTERS [lorakit flags...]
start_servers() {
	slots=$1 nad=$2
	shift 2
	ads=""
	i=0
	while [ "$i" -lt "$nad" ]; do
		ads="$ads --adapter a$i=$tmp/adapters/a$i"
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	"$lk" serve --model "$GGUF/smol135-f16.gguf" --quant nf4 --threads "$THREADS" --max-batch "$slots" \
		--max-model-len 2048 --served-model-name base --port "$LK_PORT" $ads ${SERVE_FLAGS:-} "$@" >"$tmp/lorakit.log" 2>&1 &
	lkpid=$!
	pids="$pids $!"
	wait_up "http://127.0.0.1:$LK_PORT/health" "$lkpid" "$tmp/lorakit.log"
	[ "$ANCHOR" = 1 ] || return 0
	"$LLAMA_BIN/llama-server" -m "$GGUF/smol135-q4_0.gguf" -t "$THREADS" -np "$slots" -c $((slots * 1280)) \
		--port "$LC_PORT" >"$tmp/llama.log" 2>&1 &
	lcpid=$!
	pids="$pids $!"
	wait_up "http://127.0.0.1:$LC_PORT/health" "$lcpid" "$tmp/llama.log"
}

# settle PID: wait (up to 30 s) until process PID's CPU time stops growing for a second, so that the next
# measured run does not share the CPUs with what the last server still does after its run (llama-server's
# threads keep polling, or finishing requests whose clients are gone).
settle() {
	last=-1
	for i in $(seq 1 30); do
		now=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
		if [ "$now" = "$last" ]; then
			echo "pid $1 idle after $((i - 1)) s" >&2
			return 0
		fi
		last=$now
		sleep 1
	done
	echo "pid $1 still busy after 30 s" >&2
}

models() { # N: a0,a1,...,a{N-1}
	i=0 out=""
	while [ "$i" -lt "$1" ]; do
		out="$out${out:+,}a$i"
		i=$((i + 1))
	done
	echo "$out"
}

run() { # LABEL ARGS...
	label=$1
	shift
	printf '%s ' "$label"
	if [ -n "${LOCK:-}" ]; then
		flock "$LOCK" "$lk" bench --json --prompt "$PROMPT" --gen "$GEN" "$@"
	else
		"$lk" bench --json --prompt "$PROMPT" --gen "$GEN" "$@"
	fi | tr -d '\n' | tr -s ' '
	printf ' load %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
}

for c in $CLIENTS; do
	nad=8
	[ "$c" -ge 64 ] && nad=32
	start_servers "$c" "$nad"
	lkurl="http://127.0.0.1:$LK_PORT" lcurl="http://127.0.0.1:$LC_PORT"
	# warm-up: every adapter once, both servers
	"$lk" bench --serve "$lkurl" --clients "$nad" --requests 1 --gen 4 --models "$(models "$nad")" >/dev/null
	[ "$ANCHOR" = 1 ] && "$lk" bench --serve "$lcurl" --api llama --clients "$c" --requests 1 --gen 4 >/dev/null
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		[ "$ANCHOR" = 1 ] && run "round=$r clients=$c llama-server-q4_0" --serve "$lcurl" --api llama --clients "$c" --requests "$REQUESTS" && settle "$lcpid"
		run "round=$r clients=$c lorakit-nf4-base" --serve "$lkurl" --clients "$c" --requests "$REQUESTS" --models base
		run "round=$r clients=$c lorakit-nf4-$nad-adapters" --serve "$lkurl" --clients "$c" --requests "$REQUESTS" --models "$(models "$nad")"
		r=$((r + 1))
	done
	stop_servers
done

if [ "$PREFIX" = 1 ]; then
	ANCHOR=0 # lorakit alone
	for cache in false true; do
		start_servers 32 0 --enable-prefix-caching="$cache"
		run "prefix-cache=$cache lorakit-nf4" --serve "http://127.0.0.1:$LK_PORT" --clients 32 --requests 1 --models base \
			--shared-prefix 1000 --gen 16 --outputs "$tmp/out-$cache.json"
		echo "prefix-cache=$cache lorakit peak RSS $(awk '/^VmHWM/ {print $2, $3}' "/proc/$lkpid/status")"
		stop_servers
	done
	if cmp -s "$tmp/out-false.json" "$tmp/out-true.json"; then
		echo "prefix cache: greedy outputs identical with the cache on and off"
	else
		echo "prefix cache: greedy outputs DIFFER with the cache on and off"
		exit 1
	fi
fi
