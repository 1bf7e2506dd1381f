#!/usr/bin/env bash
# Start the compose cluster and wait until it serves; print its endpoints.
# Run by `make up`; COMPOSE_PROJECT_NAME and the .env variables may be set
# in the environment (the end-to-end test uses other ports and a project
# of its own).
set -euo pipefail
cd "$(dirname "$0")"
# .env gives the defaults; variables already set win, as in docker-compose.
while IFS='=' read -r name value; do
  case "$name" in ''|\#*) continue ;; esac
  [ -n "${!name:-}" ] || export "$name=$value"
done < .env
project=${COMPOSE_PROJECT_NAME:-confetti}
compose=(docker-compose -p "$project" -f docker-compose.yml)

# Host ports first: a taken one would fail half-way through.
for var in PROXY_1_PORT PROXY_1_HTTP_PORT PROXY_2_PORT PROXY_2_HTTP_PORT CACHE_1_PORT CACHE_2_PORT GATEWAY_PORT; do
  port=${!var}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    if ! docker ps --filter "label=com.docker.compose.project=$project" --format '{{.Ports}}' | grep -q "127.0.0.1:$port->"; then
      echo "host port $port ($var in deploy/compose/.env) is taken by another program: free it or change $var" >&2
      exit 1
    fi
  fi
done

# Secrets, made once: etcd's root and Confetti's etcd passwords. The
# containers run as user 65532, which must read them and write the keys
# init and demo-tenant make.
mkdir -p "$KEYS_DIR"
for f in etcd-root etcd-confetti; do
  [ -s "$KEYS_DIR/$f" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$KEYS_DIR/$f"
done
chmod 0700 "$KEYS_DIR"; chmod 0600 "$KEYS_DIR"/*
chown -R 65532:65532 "$KEYS_DIR" 2>/dev/null || chmod -R a+rwX "$KEYS_DIR"

"${compose[@]}" up -d

# Wait for the gateway (the last to start: it needs everything else).
deadline=$((SECONDS + 300))
while :; do
  id=$("${compose[@]}" ps -q gateway || true)
  health=$( [ -n "$id" ] && docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo starting)
  [ "$health" = healthy ] && break
  for s in init demo-tenant; do
    sid=$("${compose[@]}" ps -q "$s" || true)
    if [ -n "$sid" ] && [ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$sid")" != "running 0" ] \
       && [ "$(docker inspect -f '{{.State.ExitCode}}' "$sid")" != 0 ]; then
      echo "$s failed:" >&2; "${compose[@]}" logs "$s" >&2; exit 1
    fi
  done
  if [ $SECONDS -gt $deadline ]; then
    echo "the cluster did not become healthy within 5 minutes:" >&2
    "${compose[@]}" ps >&2
    exit 1
  fi
  sleep 2
done

cat <<TXT

Confetti is up (compose project $project):

  shard proxies   127.0.0.1:$PROXY_1_PORT, 127.0.0.1:$PROXY_2_PORT   gRPC; HTTP/JSON on 127.0.0.1:$PROXY_1_HTTP_PORT, 127.0.0.1:$PROXY_2_HTTP_PORT
  cache nodes     127.0.0.1:$CACHE_1_PORT, 127.0.0.1:$CACHE_2_PORT
  gateway         http://127.0.0.1:$GATEWAY_PORT   (routes of tenant demo: /hello)
  operator key    $(cd "$KEYS_DIR" && pwd)/operator-key

Point the CLI at it:

  export CONFETTI_ENDPOINTS=127.0.0.1:$PROXY_1_PORT,127.0.0.1:$PROXY_2_PORT
  export CONFETTI_CACHE_ENDPOINTS=127.0.0.1:$CACHE_1_PORT,127.0.0.1:$CACHE_2_PORT
  export CONFETTI_API_KEY_FILE=$(cd "$KEYS_DIR" && pwd)/operator-key

make down stops it (the data stays); make down-volumes also removes the data.
TXT
