#!/usr/bin/env bash
# Run a command with a fresh emulator on PORT; the emulator is stopped (by PID) however the
# command ends, and the command's exit status is kept.
#   scripts/with-emulator.sh PORT COMMAND...
set -euo pipefail
port=${1:?port}; shift
dir=target/emulator
pidfile=$dir/test-$port.pid
scripts/emulator.sh start "$port" "$pidfile" "$dir/test-$port.log"
trap 'scripts/emulator.sh stop "$pidfile"' EXIT
export TELEMETRY_EMULATOR_URL="http://127.0.0.1:$port"
"$@"
