#!/usr/bin/env bash
# Usage: hsm/init-token.sh STATE_DIR LABEL
# Prepares a SoftHSM2 token for custos under STATE_DIR/hsm: softhsm2.conf, random PIN files
# (mode 0600, kept when present) and the token itself (through PKCS#11, so no PIN is ever on a
# command line). Idempotent. Needs the build output (dist/); the Makefile builds first.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 STATE_DIR LABEL" >&2
  exit 2
fi
STATE_DIR=$1
LABEL=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MODULE=${CUSTOS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
HSM_DIR="$STATE_DIR/hsm"
TOKEN_DIR="$HSM_DIR/tokens"
CONF="$HSM_DIR/softhsm2.conf"

umask 077
mkdir -p "$TOKEN_DIR"
HSM_DIR=$(cd "$HSM_DIR" && pwd)
TOKEN_DIR="$HSM_DIR/tokens"
CONF="$HSM_DIR/softhsm2.conf"

if [ ! -f "$CONF" ]; then
  sed "s|@TOKENDIR@|$TOKEN_DIR|" "$HERE/softhsm2.conf.template" > "$CONF"
fi

new_pin() {
  # 24 hex characters from the kernel CSPRNG.
  od -An -N12 -tx1 /dev/urandom | tr -d ' \n'
}
for f in pin so-pin; do
  if [ ! -s "$HSM_DIR/$f" ]; then
    new_pin > "$HSM_DIR/$f"
  fi
  chmod 600 "$HSM_DIR/$f"
done

SOFTHSM2_CONF="$CONF" node "$ROOT/dist/cli/custos.js" hsm init-token \
  --module "$MODULE" --label "$LABEL" \
  --pin-file "$HSM_DIR/pin" --so-pin-file "$HSM_DIR/so-pin"

echo "SOFTHSM2_CONF=$CONF"
echo "PIN file: $HSM_DIR/pin"
