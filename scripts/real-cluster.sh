#!/usr/bin/env bash
# A real Kubernetes control plane on this machine for arc-hook's conformance tests (issue 24):
# etcd, kube-apiserver, kube-scheduler and kube-controller-manager from tests/conformance (one
# multi-call Go binary, built into target/conformance if missing), a self-signed PKI, RBAC, and
# arc-hook's node agent (`arc-hook sim node`) as the one Node whose pods run as local processes.
#
#   scripts/real-cluster.sh up DIR [--settings SIM_JSON] [--no-node]
#       DIR/admin.kubeconfig  cluster admin (client certificate in system:masters)
#       DIR/kubeconfig        the runner's identity: ServiceAccount arc-runners/arc-hook-runner,
#                             bound to exactly deploy/rbac's Role, namespace arc-runners
#       DIR/logs/audit.log    the audit log of the runner namespace's ServiceAccounts' requests
#       DIR/runner/_work      the runner's work claim: pod arc-runner runs on the node with PVC
#                             arc-runner-work bound to a local PV here, as ARC's kubernetes mode
#                             lays them out (replay --cluster lays the job out there: the runner
#                             pod's annotation arc-hook.dev/runner-home names DIR/runner)
#   scripts/real-cluster.sh down DIR    stops everything `up` started and removes DIR
#   scripts/real-cluster.sh restart DIR COMPONENT   stops one (e.g. kube-apiserver; STOP_SIGNAL,
#       default TERM) and starts it again with the same command line, after DOWN_SECONDS
#
# Environment: CONFORMANCE_BIN (default target/conformance/conformance), ARC_HOOK_BIN (default
# target/debug/arc-hook, built if missing), READY_TIMEOUT (seconds per component, default 90).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CONFORMANCE_BIN:-$repo/target/conformance/conformance}
hook=${ARC_HOOK_BIN:-$repo/target/debug/arc-hook}
ready_timeout=${READY_TIMEOUT:-90}
runner_ns=arc-runners
node_name=arc-node

die() {
  echo "real-cluster: $*" >&2
  exit 1
}

usage() {
  sed -n '7,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME CMD...: runs CMD in its own process group, logs to DIR/logs/NAME.log, records its pid
# and its command line (DIR/cmd/NAME, for restart).
start() {
  local name=$1
  shift
  mkdir -p "$dir/cmd"
  printf '%q ' "$@" >"$dir/cmd/$name"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$dir/pids"
  echo "started $name (pid $!, log $dir/logs/$name.log)"
}

# stop_group PID [SIGNAL]: SIGNAL (default TERM) to the process group, KILL after 15 s.
stop_group() {
  local pid=$1 signal=${2:-TERM}
  if kill "-$signal" -- "-$pid" 2>/dev/null; then
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

# wait_for WHAT CMD...: retries CMD once a second for at most READY_TIMEOUT seconds.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + ready_timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "real-cluster: $what not ready after ${ready_timeout}s; last log lines:" >&2
      tail -n 20 "$dir"/logs/*.log >&2 || true
      return 1
    fi
    sleep 1
  done
  echo "$what ready"
}

# cert NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA.
cert() {
  local name=$1 subject=$2 san=${3:-}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subject" \
    -out "$pki/$name.csr" 2>/dev/null
  local ext=$pki/$name.ext
  if [[ -n $san ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

write_pki() {
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
    -subj "/CN=arc-hook-conformance-ca" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1"
  cert admin "/O=system:masters/CN=arc-hook-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/CN=system:node:$node_name" "IP:127.0.0.1,DNS:$node_name"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# cert_kubeconfig FILE USER: a kubeconfig authenticating with USER's client certificate.
cert_kubeconfig() {
  local file=$1 user=$2
  kubectl --kubeconfig "$file" config set-cluster conformance --server "$server" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  kubectl --kubeconfig "$file" config set-credentials "$user" \
    --client-certificate "$pki/$user.crt" --client-key "$pki/$user.key" --embed-certs >/dev/null
  kubectl --kubeconfig "$file" config set-context conformance --cluster conformance --user "$user" >/dev/null
  kubectl --kubeconfig "$file" config use-context conformance >/dev/null
}

# The runner side as ARC's controller creates it in kubernetes mode: runner pod arc-runner on the
# node, its work claim arc-runner-work bound to a local PV at DIR/runner/_work.
runner_side() {
  mkdir -p "$dir/runner/_work"
  kubectl --kubeconfig "$dir/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: arc-runner-work}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: $runner_ns, name: arc-runner-work}
  local: {path: "$dir/runner/_work"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$node_name]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: arc-runner-work, namespace: $runner_ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: arc-runner-work
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: arc-runner
  namespace: $runner_ns
  labels: {app.kubernetes.io/component: runner}
  # Where its work claim is on this machine: replay --cluster lays the job out there.
  annotations: {arc-hook.dev/runner-home: "$dir/runner"}
spec:
  serviceAccountName: arc-hook-runner
  restartPolicy: Never
  containers:
  - name: runner
    image: arc-hook-runner:replay
    command: [sleep, infinity]
    volumeMounts: [{name: work, mountPath: /home/runner/_work}]
  volumes:
  - name: work
    persistentVolumeClaim: {claimName: arc-runner-work}
EOF
  echo "runner side: pod $runner_ns/arc-runner, claim arc-runner-work at $dir/runner/_work"
}

ensure_binaries() {
  if [[ ! -x $bin ]]; then
    echo "building $bin (cold: about 10 minutes on 2 cores)"
    nice -n 10 "$repo/tests/conformance/build.sh" "$bin"
  fi
  if ((with_node)) && [[ ! -x $hook ]]; then
    echo "building $hook"
    (cd "$repo" && cargo build --bin arc-hook)
  fi
}

up() {
  [[ -e $dir/pids ]] && die "$dir already holds a cluster; run: $0 down $dir"
  ensure_binaries
  mkdir -p "$dir/logs"
  dir=$(cd "$dir" && pwd)
  pki=$dir/pki
  write_pki
  local etcd_port etcd_peer api_port
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  api_port=$(free_port)
  server=https://127.0.0.1:$api_port
  : >"$dir/pids"

  start etcd "$bin" etcd --name conformance --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "conformance=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync
  wait_for etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  # Every request of the runner namespace's ServiceAccounts, one JSON line each when it completes
  # (DIR/logs/audit.log): what the benches count on the real apiserver.
  cat >"$dir/audit-policy.yaml" <<'EOF_POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:arc-runners"]
- level: None
EOF_POLICY
  start kube-apiserver "$bin" kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
    --audit-log-format json --audit-log-mode blocking \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP
  cert_kubeconfig "$dir/admin.kubeconfig" admin
  wait_for kube-apiserver kubectl --kubeconfig "$dir/admin.kubeconfig" get --raw /readyz

  cert_kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
  start kube-controller-manager "$bin" kube-controller-manager \
    --kubeconfig "$dir/controller-manager.kubeconfig" --leader-elect=false --secure-port 0 \
    --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key" --controllers '*'
  cert_kubeconfig "$dir/scheduler.kubeconfig" scheduler
  start kube-scheduler "$bin" kube-scheduler --kubeconfig "$dir/scheduler.kubeconfig" \
    --leader-elect=false --secure-port 0

  local admin=(kubectl --kubeconfig "$dir/admin.kubeconfig")
  "${admin[@]}" create namespace "$runner_ns" >/dev/null
  "${admin[@]}" apply -k "$repo/deploy/rbac" >/dev/null
  # The ServiceAccount admission plugin refuses pods until the controller-manager's token
  # controller has run; its `default` account in kube-system shows that it has.
  wait_for kube-controller-manager "${admin[@]}" -n kube-system get serviceaccount default
  local token
  token=$("${admin[@]}" -n "$runner_ns" create token arc-hook-runner --duration 24h)
  kubectl --kubeconfig "$dir/kubeconfig" config set-cluster conformance --server "$server" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  kubectl --kubeconfig "$dir/kubeconfig" config set-credentials arc-hook-runner --token "$token" >/dev/null
  kubectl --kubeconfig "$dir/kubeconfig" config set-context conformance --cluster conformance \
    --user arc-hook-runner --namespace "$runner_ns" >/dev/null
  kubectl --kubeconfig "$dir/kubeconfig" config use-context conformance >/dev/null

  if ((with_node)); then
    local kubelet_port backend_port
    kubelet_port=$(free_port)
    backend_port=$(free_port)
    local node_args=(--kubeconfig "$dir/admin.kubeconfig" --node-name "$node_name"
      --kubelet-port "$kubelet_port" --backend-listen "127.0.0.1:$backend_port"
      --state-dir "$dir/node" --ready-file "$dir/node.ready")
    [[ -n $settings ]] && node_args+=(--settings "$settings")
    mkdir -p "$dir/node"
    start node "$hook" sim node "${node_args[@]}"
    # The apiserver proxies exec and logs to the Node's kubelet port: the front translates them
    # to the node agent's local simulator.
    start kubelet-front "$bin" kubelet-front --listen "127.0.0.1:$kubelet_port" \
      --backend "http://127.0.0.1:$backend_port" --client-ca-file "$pki/ca.crt" \
      --tls-cert-file "$pki/kubelet.crt" --tls-private-key-file "$pki/kubelet.key"
    wait_for "node $node_name" "${admin[@]}" wait --for condition=Ready "node/$node_name" --timeout 1s
    runner_side
    wait_for "runner pod" "${admin[@]}" -n "$runner_ns" wait --for condition=Ready pod/arc-runner --timeout 1s
  fi
  echo "cluster up: $server"
  echo "  KUBECONFIG=$dir/kubeconfig        (ServiceAccount $runner_ns/arc-hook-runner, deploy/rbac's Role)"
  echo "  KUBECONFIG=$dir/admin.kubeconfig  (cluster admin)"
  ((with_node)) && echo "  replay: KUBECONFIG=$dir/kubeconfig cargo run -- replay --cluster JOB_DIR"
  echo "  stop with: $0 down $dir"
}

down() {
  [[ -e $dir/pids ]] || die "$dir holds no cluster (no $dir/pids)"
  local name pid
  # Reverse start order: the node and controllers first, etcd last.
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      stop_group "$pid"
      echo "stopped $name (pid $pid)"
    fi
  done < <(tac "$dir/pids")
  rm -rf "$dir"
}

# restart: stops one component and starts it again with the same command line, after DOWN_SECONDS
# (default 0) without it; waits until the apiserver is ready again. STOP_SIGNAL (default TERM, a
# graceful stop as in an upgrade; KILL for a crash, which cuts every open stream at once).
restart() {
  [[ -e $dir/pids ]] || die "$dir holds no cluster (no $dir/pids)"
  [[ -n $component && -e $dir/cmd/$component ]] || die "no component ${component:-(none)} in $dir/cmd"
  local pid
  pid=$(awk -v n="$component" '$1 == n {p = $2} END {print p}' "$dir/pids")
  [[ -n $pid ]] && stop_group "$pid" "${STOP_SIGNAL:-TERM}"
  echo "stopped $component (pid ${pid:-none})"
  sleep "${DOWN_SECONDS:-0}"
  local cmd
  cmd=$(cat "$dir/cmd/$component")
  eval "start $component $cmd"
  wait_for kube-apiserver kubectl --kubeconfig "$dir/admin.kubeconfig" get --raw /readyz
  # A restarted apiserver is ready before its RBAC authorizer has read the bindings: until then
  # it refuses the components (they back off, the scheduler for long); wait until it authorizes.
  wait_for "RBAC of the restarted apiserver" kubectl --kubeconfig "$dir/admin.kubeconfig" \
    auth can-i watch pods --all-namespaces --as system:kube-scheduler
}

(($# >= 2)) || usage
cmd=$1
dir=$2
shift 2
settings=
with_node=1
component=
if [[ $cmd == restart ]]; then
  (($# >= 1)) || usage
  component=$1
  shift
fi
while (($#)); do
  case $1 in
  --settings)
    (($# >= 2)) || usage
    settings=$(realpath "$2")
    shift 2
    ;;
  --no-node)
    with_node=0
    shift
    ;;
  *) usage ;;
  esac
done
case $cmd in
up) up ;;
down) down ;;
restart) restart ;;
*) usage ;;
esac
