#!/usr/bin/env bash
# Quick start: a small lab of real services on loopback (an X desktop with an xterm served by
# x11vnc, redis, an HTTP server), then Overlord's main job on the embedded one-process cluster:
# every TCP port of 127.0.0.1 -> service identification -> VNC/X11 screenshots -> enrichment
# (blank filter, perceptual hash, OCR, faces, logos, e-mails). Everything stays on loopback.
# Usage: bash examples/quickstart.sh [extra `overlord scan` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_THREAD_LIMIT=1

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
need() { command -v "$1" >/dev/null || { echo "missing $1: run 'bash scripts/install-deps.sh' first" >&2; exit 1; }; }
for b in Xvfb xterm xwininfo x11vnc redis-server python3 ss cargo; do need "$b"; done

lab=$(mktemp -d -t overlord-lab.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$lab"; }
trap cleanup EXIT

# Waits until process $1 itself listens on 127.0.0.1:$2 ($4 names it, $3 is its log); exits with
# the log at once if it dies. A port from free_port is only free "a moment ago": another program
# can take it before the service binds it, and a bare connect check would accept that stranger.
wait_listen() {
    local pid=$1 port=$2 log=$3 what=$4
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { echo "$what exited; its log:" >&2; cat "$log" >&2; exit 1; }
        ss -Hltnp "src 127.0.0.1:$port" 2>/dev/null | grep -q "pid=$pid," && return 0
        sleep 0.1
    done
    echo "$what not listening on 127.0.0.1:$port after 30 s; its log:" >&2; cat "$log" >&2; exit 1
}

# Xvfb picks a free display itself (-displayfd): no race with another X server for the number.
Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp -noreset 3>"$lab/display" >"$lab/xvfb.log" 2>&1 & pids+=($!)
for _ in $(seq 300); do [ -s "$lab/display" ] && break; kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
d=$(tr -dc 0-9 <"$lab/display")
[ -n "$d" ] || { echo "Xvfb did not start; its log:" >&2; cat "$lab/xvfb.log" >&2; exit 1; }
cat >"$lab/motd" <<'TXT'
OVERLORD QUICKSTART LAB
reactor pump status: ALARM
operator contact: ops.team@example.org
TXT
DISPLAY=":$d" xterm -title overlord-lab -geometry 90x20+40+40 -fa Monospace -fs 14 -e sh -c "cat '$lab/motd'; exec sleep 100000" >"$lab/xterm.log" 2>&1 & pids+=($!)
vnc=$(free_port)
x11vnc -display ":$d" -localhost -noipv6 -rfbport "$vnc" -nopw -shared -forever -noshm -quiet >"$lab/x11vnc.log" 2>&1 & pids+=($!)
wait_listen "$!" "$vnc" "$lab/x11vnc.log" x11vnc
redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no >"$lab/redis.log" 2>&1 & pids+=($!)
wait_listen "$!" "$redis" "$lab/redis.log" redis-server
http=$(free_port)
(cd "$lab" && exec python3 -m http.server "$http" --bind 127.0.0.1) >"$lab/http.log" 2>&1 & pids+=($!)
wait_listen "$!" "$http" "$lab/http.log" "python3 http.server"
# The xterm's window with the text must be up before the screenshot is taken.
for _ in $(seq 300); do
    DISPLAY=":$d" xwininfo -name overlord-lab 2>/dev/null | grep -q IsViewable && break
    sleep 0.1
done
echo "lab: x11vnc on 127.0.0.1:$vnc (display :$d), redis on :$redis, http on :$http" >&2

# OVERLORD_BIN=path skips the release build (e.g. a debug binary).
bin=${OVERLORD_BIN:-}
if [ -z "$bin" ]; then cargo build --release -q -p overlord-cli; bin=target/release/overlord; fi
# A local leak database (address,source,date): the e-mail shown on the lab's screen is in it, so
# the scan's OCR -> e-mail -> leak lookup chain ends in a `leak` finding.
printf 'ops.team@example.org,quickstart-dump-2024,2024-05-01\nnobody@example.org,other-dump,2023-01-01\n' >"$lab/leaks.csv"
# The embedded cluster's data stays in .overlord-data (OVERLORD_DATA_DIR): `overlord search`,
# `host` and `diff` read it after the scan, and a second run adds a job to diff against.
data=${OVERLORD_DATA_DIR:-$PWD/.overlord-data}
"$bin" scan 127.0.0.1 -p 1-65535 --data-dir "$data" --leaks "$lab/leaks.csv" "$@"
echo
echo "== what the scan found, as the query layer serves it (overlord search --data-dir $data):"
"$bin" search 'net:127.0.0.0/8 open:true' --data-dir "$data" --facet service:10 --facet product:10
echo
echo "== the screens it read: overlord search 'has_screenshot:true' --data-dir $data --format jsonl"
"$bin" search 'has_screenshot:true' --data-dir "$data" --format jsonl | sed -n 1,3p
echo
echo "Explore further: overlord host 127.0.0.1 --data-dir $data (per port, its history); after a second run, overlord diff JOB --data-dir $data (what changed since the previous job)"
