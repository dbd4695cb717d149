#!/usr/bin/env bash
# Start or stop the moto emulator in the background, by PID file.
#   scripts/emulator.sh start PORT PIDFILE LOGFILE   (waits until it answers)
#   scripts/emulator.sh stop PIDFILE
set -euo pipefail
cmd=${1:?start|stop}
case "$cmd" in
start)
  port=${2:?port}; pidfile=${3:?pidfile}; logfile=${4:?logfile}
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "emulator already running (pid $(cat "$pidfile"))"; exit 0
  fi
  if curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
    echo "error: something already listens on 127.0.0.1:$port; stop it or pick another port" >&2
    exit 1
  fi
  .venv/bin/python scripts/emulator.py --host 127.0.0.1 --port "$port" >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
      echo "emulator (moto) listening on 127.0.0.1:$port (pid $(cat "$pidfile"), log $logfile)"
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "error: emulator exited; see $logfile" >&2; tail -20 "$logfile" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "error: emulator did not answer on port $port within 10 s; see $logfile" >&2
  exit 1
  ;;
stop)
  pidfile=${2:?pidfile}
  if [[ -f $pidfile ]]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  ;;
*) echo "usage: $0 start PORT PIDFILE LOGFILE | stop PIDFILE" >&2; exit 2 ;;
esac
