# shellcheck shell=bash
# The local cluster's certificates and kubeconfigs, shared by up.sh and node.sh (sourced, not run).

# A key and a certificate signed by a CA: DIR/NAME.key and DIR/NAME.crt. CA is the path of the
# CA's .crt and .key without the ending.
issue_certificate() { # dir name subject extensions ca
  local dir=$1 name=$2 subject=$3 extensions=$4 ca=$5
  openssl req -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days 3650 -extfile <(printf '%s\n' "$extensions") -out "$dir/$name.crt" 2>/dev/null
}

# A self-signed CA: DIR/NAME.key and DIR/NAME.crt.
issue_ca() { # dir name common-name
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$3" \
    -keyout "$1/$2.key" -out "$1/$2.crt" 2>/dev/null
}

# A kubeconfig that logs in to SERVER with the client certificate CERT.crt (key CERT.key), all
# embedded, the server checked against CA_FILE.
write_kubeconfig() { # path server ca-file cert
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mlmodel-local
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 "$3")
users:
- name: ${4##*/}
  user:
    client-certificate-data: $(base64 -w0 "$4.crt")
    client-key-data: $(base64 -w0 "$4.key")
contexts:
- name: mlmodel-local
  context: {cluster: mlmodel-local, user: ${4##*/}}
current-context: mlmodel-local
KUBECONFIG
}
