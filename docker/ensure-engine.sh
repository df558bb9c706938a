#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; start dockerd if none does.
#
#   docker/ensure-engine.sh            # idempotent: does nothing when `docker info` already works
#
# Starting needs root and dockerd (Debian: apt-get install docker.io). The engine runs in the background
# with the overlay2 storage driver and its log in $LAYERFREEZE_DOCKERD_LOG; its pid is in
# /var/run/docker.pid. Waits at most $LAYERFREEZE_DOCKERD_WAIT seconds for it to answer.
# Exit codes: 0 the engine answers, 1 it could not be started (the reason is printed on stderr).
set -euo pipefail

LOG=${LAYERFREEZE_DOCKERD_LOG:-/var/log/layerfreeze-dockerd.log}
WAIT=${LAYERFREEZE_DOCKERD_WAIT:-60}

fail() { echo "ensure-engine: $*" >&2; exit 1; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

command -v docker >/dev/null || fail "no docker client on PATH (Debian: apt-get install docker.io)"
answers && exit 0

command -v dockerd >/dev/null || fail "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)"
[ "$(id -u)" = 0 ] || fail "no Docker engine answers and starting dockerd needs root"

# A stale pid file from an engine that died stops a new one from starting.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi
if ! { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }; then
    # setsid + nohup: the engine outlives this script and the shell (or CI step) that ran it.
    setsid nohup dockerd --storage-driver=overlay2 >>"$LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT))
until answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "ensure-engine: dockerd did not answer within ${WAIT}s; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "ensure-engine: Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) is up (log: $LOG)" >&2
