#!/usr/bin/env bash
# Three lorakit replicas on loopback, each serving its own set of adapters, scraped by a real Prometheus (Debian's
# package, installed by .ci/install/30-prometheus.sh): a PromQL query must return each replica's adapter set.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
  echo "prometheus not installed; skipping the three-replica scrape check"; exit 0
fi
model="${LORAKIT_SHARED:-}/models/stories260K"
if [ ! -d "$model" ]; then
  echo "LORAKIT_SHARED not set; skipping the three-replica scrape check"; exit 0
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/lorakit" ./cmd/lorakit
for i in 1 2 3 4 5 6 7 8; do echo "{\"prompt\":\"Once upon a time $i\",\"response\":\"there was a cat $i\"}"; done > "$tmp/data.jsonl"
"$tmp/lorakit" train --model "$model" --data "$tmp/data.jsonl" --out "$tmp/lora" --rank 2 --alpha 4 \
  --max-steps 1 --batch-size 4 --threads 1 >"$tmp/train.log" 2>&1 || { cat "$tmp/train.log"; exit 1; }
base=$((18000 + RANDOM % 1000))
declare -A sets=([1]="green red" [2]="blue" [3]="blue red")
targets=()
for r in 1 2 3; do
  port=$((base + r))
  args=()
  for a in ${sets[$r]}; do args+=(--adapter "$a=$tmp/lora"); done
  "$tmp/lorakit" serve --model "$model" --host 127.0.0.1 --port "$port" --threads 1 "${args[@]}" >"$tmp/serve$r.log" 2>&1 &
  pids+=($!)
  targets+=("'127.0.0.1:$port'")
done
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: lorakit
    static_configs:
      - targets: [$(IFS=,; echo "${targets[*]}")]
YAML
promport=$((base + 500))
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$promport" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
want="$(for r in 1 2 3; do echo "127.0.0.1:$((base + r)) $(echo ${sets[$r]} | tr ' ' '\n' | sort | paste -sd, -)"; done)"
got=""
for _ in $(seq 1 60); do
  sleep 1
  json=$(curl -fsS "http://127.0.0.1:$promport/api/v1/query" --data-urlencode 'query=lorakit_adapter_loaded == 1' 2>/dev/null) || continue
  got=$(printf '%s' "$json" | python3 -c '
import json, sys, collections
sets = collections.defaultdict(list)
for r in json.load(sys.stdin)["data"]["result"]:
    sets[r["metric"]["instance"]].append(r["metric"]["adapter"])
for inst in sorted(sets):
    print(inst, ",".join(sorted(sets[inst])))
')
  [ "$got" = "$want" ] && break
done
if [ "$got" != "$want" ]; then
  echo "Prometheus query lorakit_adapter_loaded == 1 by instance:"; echo "$got"; echo "want:"; echo "$want"
  tail -5 "$tmp"/serve*.log "$tmp/prometheus.log"
  exit 1
fi
echo "Prometheus sees each replica's adapters:"; echo "$got"
