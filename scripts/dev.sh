#!/usr/bin/env bash
# `make dev`: start the emulator, run `telemetry local` in the foreground, stop the emulator
# when it ends (Ctrl-C).
#   scripts/dev.sh EMULATOR_PORT API_PORT
set -euo pipefail
emulator_port=${1:-4566}; api_port=${2:-3000}
dir=target/emulator
pidfile=$dir/dev.pid
scripts/emulator.sh start "$emulator_port" "$pidfile" "$dir/dev.log"
trap 'scripts/emulator.sh stop "$pidfile"' EXIT
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:$emulator_port}
target/debug/telemetry local --port "$api_port"
