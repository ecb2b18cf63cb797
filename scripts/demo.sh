#!/usr/bin/env bash
# The whole custos story, end to end, against a real SoftHSM2 token and a real swtpm TPM:
#   1. custody: keys made in the HSM, used, rotated, checked with openssl and pkcs11-tool
#   2. hosts: a swtpm host enrolls (EK certificate, credential activation) and attests
#   3. enclaves: an attested session: HSM-signed token + HPKE-sealed session key
#   4. auditors: rotation on a fast clock, audit export, offline verification, tamper detection
# Usage: scripts/demo.sh STATE_DIR   (make demo passes .custos)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$(mkdir -p "${1:-$ROOT/.custos}" && cd "${1:-$ROOT/.custos}" && pwd)
cd "$ROOT"

bold=$'\033[1m'; dim=$'\033[2m'; green=$'\033[32m'; red=$'\033[31m'; off=$'\033[0m'
[ -t 1 ] || { bold=; dim=; green=; red=; off=; }
section() { printf '\n%s━━ %s%s\n' "$bold" "$*" "$off"; }
step() { printf '\n%s▸ %s%s\n' "$bold" "$*" "$off"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
ok() { printf '%s✔ %s%s\n' "$green" "$*" "$off"; }
fail() { printf '%s✘ %s%s\n' "$red" "$*" "$off"; exit 1; }
custos() { node "$ROOT/bin/custos.js" "$@"; }
agent() { node "$ROOT/bin/custos-agent.js" "$@"; }

free_port() { node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

section "0. Set-up: a SoftHSM2 token and the custos state under $STATE"
bash hsm/init-token.sh "$STATE" custos >/dev/null
export SOFTHSM2_CONF="$STATE/hsm/softhsm2.conf"
export CUSTOS_STATE_DIR="$STATE"
export CUSTOS_PKCS11_TOKEN_LABEL=custos
export CUSTOS_PKCS11_PIN_FILE="$STATE/hsm/pin"
PORT=$(free_port)
export CUSTOS_LISTEN="127.0.0.1:$PORT"
export CUSTOS_URL="http://127.0.0.1:$PORT"
ok "token 'custos' ready (PINs in $STATE/hsm, mode 0600, never on a command line)"
show custos init

start_server() {
  node "$ROOT/bin/custos.js" serve >>"$STATE/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 100); do
    if node -e "fetch(process.env.CUSTOS_URL+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  tail -20 "$STATE/server.log"; fail "custos did not become ready"
}
start_server
ok "custos serving on $CUSTOS_URL (SQLite at $STATE/custos.db; log in $STATE/server.log)"

section "1. Custody: keys live in the HSM"
SUFFIX=$(date +%s)
SIG="ledger-signing-$SUFFIX"; RSA="payments-rsa-$SUFFIX"; DATA="ledger-data-$SUFFIX"
step "Create an ECDSA P-256 signing key, an RSA-2048 signing key and an AES-256 data key"
show custos keys create "$SIG" --type ec-p256 --purpose sign
show custos keys create "$RSA" --type rsa-2048 --purpose sign
show custos keys create "$DATA" --type aes-256 --purpose encrypt

step "Sign in the HSM, verify with openssl using the public key custos returns"
echo -n "ledger block 1042" > "$STATE/block.txt"
SIGNATURE=$(custos --json keys sign "$SIG" --data-file "$STATE/block.txt" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).signature))")
printf '%s' "$SIGNATURE" | base64 -d > "$STATE/block.sig"
custos keys public "$SIG" > "$STATE/sig.pem"
show openssl dgst -sha256 -verify "$STATE/sig.pem" -signature "$STATE/block.sig" "$STATE/block.txt"

step "Encrypt and decrypt with AES-256-GCM inside the HSM (versioned ciphertext)"
CT=$(custos keys encrypt "$DATA" --plaintext "account 7 balance 1000" --aad "ledger:7")
echo "$CT"
show custos keys decrypt "$DATA" --ciphertext "$CT" --aad "ledger:7"
if custos keys decrypt "$DATA" --ciphertext "$CT" --aad "ledger:8" 2>"$STATE/err.txt"; then fail "decrypt with the wrong AAD succeeded"; fi
ok "wrong associated data refused: $(cat "$STATE/err.txt")"

step "Rotate: v2 signs, v1 still verifies old signatures"
show custos keys rotate "$SIG" --reason "demo rotation"
show custos keys verify "$SIG" --data-file "$STATE/block.txt" --signature "$SIGNATURE"
show custos keys show "$SIG"

step "An independent PKCS#11 client (OpenSC pkcs11-tool) sees only sensitive, never-extractable keys"
PKCS11_PIN=$(cat "$STATE/hsm/pin") pkcs11-tool --module "${CUSTOS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}" --token-label custos --login --pin env:PKCS11_PIN --list-objects --type privkey 2>/dev/null \
  | grep -E "Private Key|label|Access" | head -12
