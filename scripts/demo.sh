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
# A port whose next one is free too (swtpm takes PORT for commands and PORT+1 for control).
free_port_pair() { node -e "
const net = require('net');
const free = (p) => new Promise((r) => { const s = net.createServer(); s.once('error', () => r(false)); s.listen(p, '127.0.0.1', () => s.close(() => r(true))); });
const any = () => new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
(async () => { for (let i = 0; i < 50; i++) { const p = await any(); if (p < 65535 && (await free(p + 1))) { console.log(p); return; } } process.exit(1); })();"; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

section "0. Set-up: a SoftHSM2 token, a swtpm TPM with EK certificates, custos on SQLite ($STATE)"
bash hsm/init-token.sh "$STATE" custos >/dev/null
export SOFTHSM2_CONF="$STATE/hsm/softhsm2.conf"
export CUSTOS_STATE_DIR="$STATE"
export CUSTOS_PKCS11_TOKEN_LABEL=custos
export CUSTOS_PKCS11_PIN_FILE="$STATE/hsm/pin"
ok "token 'custos' ready (PINs in $STATE/hsm, mode 0600, never on a command line)"

# A software TPM that looks like a provisioned machine: RSA and P-384 EK certificates in NV,
# issued by a local CA that this demo (and only this demo) adds to the EK trust anchors.
# A new machine every run: a host revoked in an earlier run stays revoked (its EK is remembered).
TPM_DIR="$STATE/swtpm"
rm -rf "$TPM_DIR" "$STATE/agent"
sh attestation/swtpm/create-tpm.sh "$TPM_DIR" >/dev/null
# A port found free can be taken before swtpm binds it (a busy machine's outgoing connections use
# the same range): try again on another pair when swtpm does not answer.
TPM_UP=0
for _ in 1 2 3 4 5; do
  TPM_PORT=$(free_port_pair)
  sh attestation/swtpm/start-tpm.sh "$TPM_DIR" "$TPM_PORT" >"$STATE/swtpm.log" 2>&1 &
  TPM_PID=$!
  export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$TPM_PORT"
  for _ in $(seq 1 50); do
    if tpm2_getcap properties-fixed >/dev/null 2>&1; then TPM_UP=1; break; fi
    kill -0 "$TPM_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$TPM_UP" = 1 ]; then PIDS+=("$TPM_PID"); break; fi
  kill "$TPM_PID" 2>/dev/null || true
done
if [ "$TPM_UP" != 1 ]; then echo "swtpm did not start; see $STATE/swtpm.log" >&2; exit 1; fi
mkdir -p "$STATE/ek-ca"
cp attestation/ek-ca/*.pem "$TPM_DIR/localca/swtpm-localca-rootca-cert.pem" "$TPM_DIR/localca/issuercert.pem" "$STATE/ek-ca/"
ok "swtpm on $TPM2TOOLS_TCTI with EK certificates from a local CA"

# Policies: the repository's, plus the demo's own (a host policy pinned to this TPM's PCR 7,
# a session policy, and a rotation policy with periods of seconds so rotations happen now).
POL="$STATE/policies"
rm -rf "$POL"; mkdir -p "$POL"
cp -r policies/rotation policies/attestation policies/sessions "$POL/"
PCR7=$(tpm2_pcrread sha256:7 -o "$STATE/pcr7.bin" >/dev/null && od -An -tx1 -v "$STATE/pcr7.bin" | tr -d ' \n')
cat >"$POL/attestation/demo-hosts.yaml" <<YAML
id: demo-hosts
version: 1
hosts:
  labels: { role: demo-host }
enrollment:
  requireEkCertificate: true
pcrs:
  bank: sha256
  indices: [0, 1, 2, 3, 4, 5, 6, 7]
  referenceValues:
    "7": ["$PCR7"]
nonceTtl: PT60S
YAML
cat >"$POL/sessions/demo-enclaves.yaml" <<YAML
id: demo-enclaves
version: 1
hosts:
  labels: { role: demo-host }
attestationPolicy: demo-hosts
audiences: ["urn:custos:audience:ledger"]
tokenTtl: PT5M
disclose: [ear.trustworthiness-vector, ear.appraisal-policy-id]
issuerKey: session-issuer
YAML
cat >"$POL/rotation/demo-fast.yaml" <<YAML
id: demo-fast
version: 1
profile: test
selector:
  names: ["demo-rotating-*"]
  types: [ec-p256]
rotateEvery: PT20S
prePublish: PT5S
deactivateAfter: PT10S
destroyAfter: PT15S
destroyPendingWindow: PT5S
YAML
show custos policy lint "$POL"
export CUSTOS_POLICY_DIR="$POL" CUSTOS_EK_CA_DIR="$STATE/ek-ca"
export CUSTOS_ROTATION_INTERVAL_SECONDS=1 CUSTOS_AUDIT_CHECKPOINT_SECONDS=2 CUSTOS_ISSUER="https://custos.demo"
PORT=$(free_port)
export CUSTOS_LISTEN="127.0.0.1:$PORT"
export CUSTOS_URL="http://127.0.0.1:$PORT"
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
SUFFIX=$(date +%s)
ROTATING="demo-rotating-$SUFFIX"
custos keys create "$ROTATING" --type ec-p256 --purpose sign >/dev/null
ok "key $ROTATING created under the demo-fast rotation policy; the scheduler rotates it while the demo goes on"

section "1. Custody: keys live in the HSM"
SIG="ledger-signing-$SUFFIX"; RSA="payments-rsa-$SUFFIX"; DATA="ledger-data-$SUFFIX"
step "Create an ECDSA P-256 signing key, an RSA-2048 signing key and an AES-256 data key"
show custos keys create "$SIG" --type ec-p256 --purpose sign --rotation-policy manual
show custos keys create "$RSA" --type rsa-2048 --purpose sign --rotation-policy manual
show custos keys create "$DATA" --type aes-256 --purpose encrypt

step "Sign in the HSM, verify with openssl using the public key custos returns"
echo -n "ledger block 1042" > "$STATE/block.txt"
SIGNATURE=$(custos --json keys sign "$SIG" --data-file "$STATE/block.txt" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).signature))")
printf '%s' "$SIGNATURE" | base64 -d > "$STATE/block.sig"
custos keys public "$SIG" > "$STATE/sig.pem"
show openssl dgst -sha256 -verify "$STATE/sig.pem" -signature "$STATE/block.sig" "$STATE/block.txt"

step "Sign a batch of blocks in one request: each signature made in the HSM and audited on its own"
for n in 1043 1044 1045; do echo -n "ledger block $n" > "$STATE/block-$n.txt"; done
custos keys sign-batch "$SIG" "$STATE/block-1043.txt" "$STATE/block-1044.txt" "$STATE/block-1045.txt" > "$STATE/batch.sigs"
head -c 120 "$STATE/batch.sigs"; echo " …"
sed -n 3p "$STATE/batch.sigs" | base64 -d > "$STATE/block-1045.sig"
show openssl dgst -sha256 -verify "$STATE/sig.pem" -signature "$STATE/block-1045.sig" "$STATE/block-1045.txt"

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
# Into a file first: the token keeps the keys of earlier runs, and `head` closing the pipe early
# would fail the script (SIGPIPE under pipefail).
PKCS11_PIN=$(cat "$STATE/hsm/pin") pkcs11-tool --module "${CUSTOS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}" --token-label custos --login --pin env:PKCS11_PIN --list-objects --type privkey 2>/dev/null \
  | grep -E "Private Key|label|Access" > "$STATE/pkcs11-objects.txt"
head -12 "$STATE/pkcs11-objects.txt"
KEYS=$(grep -c 'Private Key' "$STATE/pkcs11-objects.txt")
[ "$KEYS" = "$(grep -E 'Access: +sensitive.*never extractable' -c "$STATE/pkcs11-objects.txt")" ] || fail "a private key on the token is extractable or not sensitive"
ok "$KEYS private keys on the token, every one sensitive and never extractable"

section "2. Hosts: a TPM proves itself, then attests"
AGENT_STATE="$STATE/agent/state.json"
mkdir -p "$STATE/agent" && chmod 700 "$STATE/agent"
step "The operator issues a single-use provisioning token for a demo host"
show custos hosts provisioning-token --label role=demo-host --uses 1 --ttl-seconds 600 --output "$STATE/agent/provisioning.token"
step "The host's agent reads its EK certificate from NV, makes an AK, enrolls, and activates the credential only its TPM can open"
show agent --state "$AGENT_STATE" enroll --provisioning-token-file "$STATE/agent/provisioning.token" --ak ecc
HOST_ID=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$AGENT_STATE','utf8')).hostId)")
show custos hosts show "$HOST_ID"
step "Attest: a fresh nonce, a quote over PCRs 0-7, appraised against the demo-hosts policy"
show agent --state "$AGENT_STATE" attest

section "3. Enclaves: an attested session"
step "The enclave makes an ephemeral P-256 key and quotes over SHA-256(nonce ‖ its JWK thumbprint)"
show agent --state "$AGENT_STATE" session --audience urn:custos:audience:ledger --token-out "$STATE/agent/session.jwt" --key-out "$STATE/agent/session.key"
ok "session key: $(stat -c %s "$STATE/agent/session.key") bytes in $STATE/agent/session.key (mode $(stat -c %a "$STATE/agent/session.key")), opened with the ephemeral private key"
step "A relying party verifies the token offline against the live JWKS"
show node examples/verify-token/verify.mjs --token "@$STATE/agent/session.jwt" --jwks "$CUSTOS_URL/.well-known/jwks.json" --issuer "$CUSTOS_ISSUER" --audience urn:custos:audience:ledger
step "Replaying captured evidence is refused (the nonce is single-use)"
show node scripts/demo-replay.mjs "$AGENT_STATE" urn:custos:audience:ledger
introspect() {
  node -e "fetch(process.env.CUSTOS_URL+'/v1/sessions/introspect',{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify({token:require('fs').readFileSync('$STATE/agent/session.jwt','utf8').trim()})}).then(r=>r.json()).then(b=>console.log('introspect: active='+b.active))"
}
introspect

section "2b. Hosts: a changed PCR"
step "Something unexpected is measured into PCR 7 (the Secure Boot state)"
show agent --state "$AGENT_STATE" pcr extend --index 7 --data "unsigned boot component"
if agent --state "$AGENT_STATE" attest; then fail "a changed PCR 7 was still affirming"; fi
ok "contraindicated: PCR 7 no longer matches the reference value"
if agent --state "$AGENT_STATE" session --audience urn:custos:audience:ledger --token-out "$STATE/agent/refused.jwt" --key-out "$STATE/agent/refused.key" 2>"$STATE/err.txt"; then fail "a session was issued on contraindicated evidence"; fi
ok "and no session for it: $(tail -1 "$STATE/err.txt")"

step "The operator revokes the host: its live session stops verifying at introspection"
show custos hosts revoke "$HOST_ID" --reason "PCR 7 changed"
introspect

section "4. Auditors: rotation on schedule, and an audit log they verify offline"
step "The scheduler has been rotating $ROTATING under the demo-fast policy (rotateEvery PT20S, prePublish PT5S, deactivateAfter PT10S, destroyAfter PT15S)"
for _ in $(seq 1 60); do
  n=$(custos --json keys show "$ROTATING" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const k=JSON.parse(s);console.log(k.versions.filter(v=>v.state==='destroyed').length)})")
  [ "$n" -ge 1 ] && break
  sleep 1
done
show custos keys show "$ROTATING"
step "What the scheduler will do next (the same plan a reviewer sees before merging a policy)"
custos rotation plan --days 1 > "$STATE/plan.txt"
grep -m8 -E "demo-rotating|nothing due" "$STATE/plan.txt" || true
step "An auditor token, read-only; the auditor pins the audit keys' public halves, kept apart from any export"
show custos tokens create demo-auditor --role auditor --output "$STATE/auditor.token"
show custos --token-file "$STATE/auditor.token" audit keys --output "$STATE/audit-keys.json"
custos --token-file "$STATE/auditor.token" audit list --limit 1000 > "$STATE/audit-list.txt"
tail -5 "$STATE/audit-list.txt"
sleep 3 # one more HSM-signed checkpoint (every 2 s in this demo)
step "Export the whole log (events, HSM-signed checkpoints, audit public keys) and verify it offline"
show custos --token-file "$STATE/auditor.token" audit export --output "$STATE/audit.jsonl"
show custos audit verify --trusted-keys "$STATE/audit-keys.json" "$STATE/audit.jsonl"
step "Someone with database access rewrites history: one event's outcome is changed"
LINE=$(grep -n -m1 '"action":"key.sign"' "$STATE/audit.jsonl" | cut -d: -f1)
sed "${LINE}s/\"outcome\":\"success\"/\"outcome\":\"failure\"/" "$STATE/audit.jsonl" > "$STATE/audit-tampered.jsonl"
printf '%s$ custos audit verify --trusted-keys %s %s%s\n' "$dim" "$STATE/audit-keys.json" "$STATE/audit-tampered.jsonl" "$off"
if custos audit verify --trusted-keys "$STATE/audit-keys.json" "$STATE/audit-tampered.jsonl"; then fail "tampering went unnoticed"; fi
ok "the tampered event is named above (line $LINE of the export)"

section "Done"
ok "custody, hosts, enclaves and auditors — all against SoftHSM2 and swtpm, on SQLite in $STATE"
