#!/bin/sh
# Start swtpm on 127.0.0.1:PORT (commands) and PORT+1 (control) over a state made by
# create-tpm.sh, in the foreground (exec: the caller's pid is swtpm's pid). Prints only the TCTI
# string tpm2-tools need; nothing secret.
#
# Usage: start-tpm.sh STATE_DIR PORT
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 STATE_DIR PORT" >&2
  exit 2
fi
STATE_DIR=$(cd "$1" && pwd)
PORT=$2
CTRL=$((PORT + 1))
echo "TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$PORT"
exec swtpm socket --tpm2 \
  --tpmstate dir="$STATE_DIR/tpm" \
  --server type=tcp,port="$PORT",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port="$CTRL",bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear
