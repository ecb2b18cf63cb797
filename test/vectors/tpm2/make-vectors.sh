#!/bin/sh
# Regenerate the TPM 2.0 test vectors in this folder with swtpm + tpm2-tools (offline).
# Usage: test/vectors/tpm2/make-vectors.sh            (from the repository root or anywhere)
# Needs: swtpm, swtpm_setup, swtpm_localca, tpm2-tools 5.x, openssl, xxd.
# See README.md for what each file is. Every quote is cross-checked with tpm2_checkquote.
set -eu

OUT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$OUT/../../.." && pwd)
WORK=$(mktemp -d)
SWTPM_PID=
cleanup() {
  if [ -n "$SWTPM_PID" ]; then kill "$SWTPM_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$ROOT/attestation/swtpm/create-tpm.sh" "$WORK/state" sha1,sha256 >/dev/null

# A free port pair: try random ports until swtpm stays up.
for try in 1 2 3 4 5 6 7 8 9 10; do
  PORT=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
  "$ROOT/attestation/swtpm/start-tpm.sh" "$WORK/state" "$PORT" >/dev/null 2>"$WORK/swtpm.err" &
  SWTPM_PID=$!
  sleep 0.3
  if kill -0 "$SWTPM_PID" 2>/dev/null; then break; fi
  SWTPM_PID=
done
[ -n "$SWTPM_PID" ] || { echo "could not start swtpm" >&2; exit 1; }
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
cd "$WORK"

# swtpm has no resource manager: flush transient objects after every step.
flush() { tpm2_flushcontext -t >/dev/null; tpm2_flushcontext -s >/dev/null 2>&1 || true; }

# Local CA certificates and the EK certificates as stored in NV (may carry trailing padding).
cp state/localca/swtpm-localca-rootca-cert.pem "$OUT/localca-root.pem"
cp state/localca/issuercert.pem "$OUT/localca-intermediate.pem"
tpm2_nvread 0x01c00002 2>/dev/null -o "$OUT/ek-rsa-cert.nv.der"
tpm2_nvread 0x01c00016 2>/dev/null -o "$OUT/ek-ecc384-cert.nv.der"
tpm2_nvread 0x01c08000 2>/dev/null -o "$OUT/platform-cert.nv.der"

# EKs (default templates: RSA-2048 low range, ECC P-384 high range).
tpm2_createek -c ek-rsa.ctx -G rsa -u "$OUT/ek-rsa.pub" >/dev/null; flush
tpm2_createek -c ek-ecc384.ctx -G ecc384 -u "$OUT/ek-ecc384.pub" >/dev/null; flush

# AKs under the RSA EK (RSA-2048 RSASSA-SHA256, ECC P-256 ECDSA-SHA256) and an ECC AK under the
# P-384 EK.
tpm2_createak -C ek-rsa.ctx -c ak-rsa.ctx -G rsa -g sha256 -s rsassa \
  -u "$OUT/ak-rsa.pub" -n "$OUT/ak-rsa.name" >/dev/null; flush
tpm2_createak -C ek-rsa.ctx -c ak-ecc.ctx -G ecc -g sha256 -s ecdsa \
  -u "$OUT/ak-ecc.pub" -n "$OUT/ak-ecc.name" >/dev/null; flush
tpm2_createak -C ek-ecc384.ctx -c ak-ecc-under-p384.ctx -G ecc -g sha256 -s ecdsa \
  -u "$OUT/ak-ecc-under-p384.pub" -n "$OUT/ak-ecc-under-p384.name" >/dev/null; flush
tpm2_readpublic -c ek-rsa.ctx -n "$OUT/ek-rsa.name" >/dev/null; flush
tpm2_readpublic -c ak-rsa.ctx -q "$OUT/ak-rsa.qname" >/dev/null; flush
tpm2_readpublic -c ak-ecc.ctx -q "$OUT/ak-ecc.qname" >/dev/null; flush
tpm2_readpublic -c ak-ecc-under-p384.ctx -q "$OUT/ak-ecc-under-p384.qname" >/dev/null; flush
tpm2_readpublic -c ek-ecc384.ctx -n "$OUT/ek-ecc384.name" >/dev/null; flush

# Non-zero PCR values in both banks.
tpm2_pcrextend 0:sha1=$(printf 'custos-0' | openssl dgst -sha1 -r | cut -c1-40),sha256=$(printf 'custos-0' | openssl dgst -sha256 -r | cut -c1-64)
tpm2_pcrextend 7:sha1=$(printf 'custos-7' | openssl dgst -sha1 -r | cut -c1-40),sha256=$(printf 'custos-7' | openssl dgst -sha256 -r | cut -c1-64)

quote() { # name ak pcrlist sighash nonce
  tpm2_quote -c "$2.ctx" -l "$3" -g "$4" -q "$5" -m "$OUT/$1.quote" -s "$OUT/$1.sig" \
    -o "$OUT/$1.pcrs" -F values >/dev/null
  flush
  printf '%s' "$5" > "$OUT/$1.nonce.hex"
  printf '%s' "$3" > "$OUT/$1.pcrlist"
  tpm2_checkquote -u "$OUT/$2.pub" -m "$OUT/$1.quote" -s "$OUT/$1.sig" -f "$OUT/$1.pcrs" \
    -F values -l "$3" -g "$4" -q "$5" >/dev/null
  echo "tpm2_checkquote ok: $1"
}
quote quote-rsa-sha256 ak-rsa sha256:0,1,2,3,7 sha256 \
  00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
quote quote-ecc-sha256 ak-ecc sha256:0,1,2,3,7 sha256 \
  a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0
quote quote-rsa-sha1bank ak-rsa sha1:0,1,2,3,7 sha256 \
  5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed
quote quote-ecc384ek-sha256 ak-ecc-under-p384 sha256:0,7 sha256 \
  0f0e0d0c0b0a09080706050403020100

# Credential blobs made by tpm2-tools offline (-T none) for the RSA EK, activated by the TPM to
# prove they are good.
printf 'custos-vector-secret-0123456789!' > secret.bin
cp secret.bin "$OUT/credential-rsa.secret"
tpm2_makecredential -T none -u "$OUT/ek-rsa.pub" -s secret.bin \
  -n "$(xxd -p -c 256 "$OUT/ak-rsa.name")" -o "$OUT/credential-rsa.bin"
tpm2_startauthsession --policy-session -S session.ctx
tpm2_policysecret -S session.ctx -c e >/dev/null
tpm2_activatecredential -c ak-rsa.ctx -C ek-rsa.ctx -i "$OUT/credential-rsa.bin" \
  -o activated.bin -P "session:session.ctx" >/dev/null
tpm2_flushcontext session.ctx; flush
cmp activated.bin secret.bin
echo "tpm2_activatecredential ok: credential-rsa"

# The same for the P-384 EK (userWithAuth: plain empty-password authorization).
tpm2_makecredential -T none -u "$OUT/ek-ecc384.pub" -s secret.bin \
  -n "$(xxd -p -c 256 "$OUT/ak-ecc-under-p384.name")" -o "$OUT/credential-ecc384.bin"
tpm2_activatecredential -c ak-ecc-under-p384.ctx -C ek-ecc384.ctx -i "$OUT/credential-ecc384.bin" \
  -o activated384.bin >/dev/null; flush
cmp activated384.bin secret.bin
echo "tpm2_activatecredential ok: credential-ecc384"

rm -f "$OUT"/*.ctx
echo "vectors written to $OUT"
