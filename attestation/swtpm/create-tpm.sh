#!/bin/sh
# Create a TPM 2.0 state for swtpm with an RSA-2048 EK certificate (NV 0x01c00002), an ECC NIST
# P-384 EK certificate (NV 0x01c00016) and a platform certificate (NV 0x01c08000), all issued by a
# local CA that lives next to the state. Works offline and never touches /var/lib/swtpm-localca
# or the system swtpm_setup.conf: both config files are written into STATE_DIR.
#
# Usage: create-tpm.sh STATE_DIR [PCR_BANKS]     (PCR_BANKS default: sha1,sha256)
#
# Result in STATE_DIR:
#   tpm/                          swtpm state (pass to start-tpm.sh)
#   localca/swtpm-localca-rootca-cert.pem   local root CA
#   localca/issuercert.pem                  local intermediate CA (CN=swtpm-localca)
#   ek-certs/                     the EK certificates as DER files, as swtpm_setup wrote them
# The CA private keys stay in localca/ (mode 0700): test material only.
set -eu

if [ $# -lt 1 ]; then
  echo "usage: $0 STATE_DIR [PCR_BANKS]" >&2
  exit 2
fi
STATE_DIR=$1
BANKS=${2:-sha1,sha256}

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
mkdir -p "$STATE_DIR/tpm" "$STATE_DIR/localca" "$STATE_DIR/ek-certs"
chmod 0700 "$STATE_DIR/localca"

cat > "$STATE_DIR/swtpm-localca.conf" <<CONF
statedir = $STATE_DIR/localca
signingkey = $STATE_DIR/localca/signkey.pem
issuercert = $STATE_DIR/localca/issuercert.pem
certserial = $STATE_DIR/localca/certserial
CONF

cat > "$STATE_DIR/swtpm-localca.options" <<CONF
--platform-manufacturer custos-test
--platform-version 2.1
--platform-model swtpm
CONF

cat > "$STATE_DIR/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $STATE_DIR/swtpm-localca.conf
create_certs_tool_options = $STATE_DIR/swtpm-localca.options
active_pcr_banks = $BANKS
CONF

swtpm_setup --tpm2 \
  --tpmstate "$STATE_DIR/tpm" \
  --config "$STATE_DIR/swtpm_setup.conf" \
  --create-ek-cert --create-platform-cert \
  --pcr-banks "$BANKS" \
  --write-ek-cert-files "$STATE_DIR/ek-certs" \
  --overwrite \
  --logfile "$STATE_DIR/swtpm_setup.log"

test -s "$STATE_DIR/localca/swtpm-localca-rootca-cert.pem"
test -s "$STATE_DIR/localca/issuercert.pem"
echo "$STATE_DIR"
