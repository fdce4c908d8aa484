#!/usr/bin/env bash
# The seed recipe zdd replaces, for comparison only (bench/bench.py runs it under the same load):
# run the new image on a second published port, load-balance both, stop the old, re-create it from the
# new image on the first port, switch back, stop the second. Usage: bash_recipe.sh IMAGE SNIPPET CADDYFILE
set -euo pipefail
image=$1 snippet=$2 caddyfile=$3
main_port=${MAIN_PORT:-18181} spare_port=${SPARE_PORT:-18182}

wait_healthy() {
  until curl -fs "http://127.0.0.1:$1/up" >/dev/null; do sleep 1; done
}
reload() {
  caddy reload --config "$caddyfile" --adapter caddyfile >/dev/null 2>&1
}

docker run -d --name web_new -p "127.0.0.1:$spare_port:8080" "$image" >/dev/null
wait_healthy "$spare_port"
printf 'reverse_proxy 127.0.0.1:%s 127.0.0.1:%s\n' "$main_port" "$spare_port" > "$snippet"
reload
docker stop web >/dev/null
docker rm web >/dev/null
echo "old-gone $(date +%s.%N)"
docker run -d --name web -p "127.0.0.1:$main_port:8080" "$image" >/dev/null
wait_healthy "$main_port"
printf 'reverse_proxy 127.0.0.1:%s\n' "$main_port" > "$snippet"
reload
docker stop web_new >/dev/null
docker rm web_new >/dev/null
echo "done $(date +%s.%N)"
