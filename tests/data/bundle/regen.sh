#!/bin/sh
# Regenerates the bundle fixtures (CE1). Needs openssl and GnuTLS certtool (gnutls-bin).
# Private keys live only in a temporary directory and are deleted: no key is committed.
set -eu
out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

ec() { openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$1" -out "$2" 2>/dev/null; }
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n'\
'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > int.ext
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'\
'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:leaf.zone.example\n'\
'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > leaf.ext

# P-256 chain: root -> intermediate -> leaf, valid for 100 years.
ec P-256 root.key
openssl req -x509 -new -key root.key -sha256 -days 36500 -set_serial 1 \
  -subj "/O=zonepki test/CN=zonepki Test Root P-256" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out root-p256.pem
ec P-256 int.key
openssl req -new -key int.key -subj "/O=zonepki test/CN=zonepki Test Intermediate" -out int.csr
openssl x509 -req -in int.csr -CA root-p256.pem -CAkey root.key -set_serial 2 -days 36500 \
  -sha256 -extfile int.ext -out int-p256.pem 2>/dev/null
ec P-256 leaf.key
openssl req -new -key leaf.key -subj "/O=zonepki test/CN=leaf.zone.example" -out leaf.csr
openssl x509 -req -in leaf.csr -CA int-p256.pem -CAkey int.key -set_serial 3 -days 36500 \
  -sha256 -extfile leaf.ext -out leaf-p256.pem 2>/dev/null

# A self-signed P-384 and a self-signed RSA 2048 root.
ec P-384 p384.key
openssl req -x509 -new -key p384.key -sha384 -days 36500 -set_serial 4 \
  -subj "/O=zonepki test/CN=zonepki Test Root P-384" \
  -addext basicConstraints=critical,CA:TRUE -out root-p384.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
openssl req -x509 -new -key rsa.key -sha256 -days 36500 -set_serial 5 \
  -subj "/O=zonepki test/CN=zonepki Test Root RSA" \
  -addext basicConstraints=critical,CA:TRUE -out root-rsa.pem

cp root-p256.pem int-p256.pem leaf-p256.pem root-p384.pem root-rsa.pem "$out/"
cat leaf-p256.pem int-p256.pem root-p256.pem > "$out/chain-p256.pem"
openssl x509 -in leaf-p256.pem -outform DER -out "$out/leaf-p256.der"
openssl crl2pkcs7 -nocrl -certfile "$out/chain-p256.pem" -out "$out/chain-p256-pem.p7b"
openssl crl2pkcs7 -nocrl -certfile "$out/chain-p256.pem" -outform DER \
  -out "$out/chain-p256-der.p7b"
# `-print_certs` writes subject=/issuer= lines before each block.
openssl pkcs7 -in "$out/chain-p256-pem.p7b" -print_certs -out "$out/chain-print-certs.pem"
# GnuTLS orders the certificates as a DER SET OF (sorted), not as given.
certtool --p7-generate --load-certificate "$out/chain-p256.pem" --outder \
  --outfile "$out/chain-certtool.p7b" 2>/dev/null

# Wrong types: a CSR and a CRL, PEM and DER.
cp leaf.csr "$out/leaf.csr.pem"
openssl req -in leaf.csr -outform DER -out "$out/leaf.csr.der"
printf 'crl_next_update = 36500\ncrl_number = 1\n' > crl.tmpl
certtool --generate-crl --load-ca-privkey root.key --load-ca-certificate root-p256.pem \
  --template crl.tmpl --outfile "$out/root.crl.pem" 2>/dev/null
openssl crl -in "$out/root.crl.pem" -outform DER -out "$out/root.crl.der"
