#!/bin/bash
# fleet node set-up, rendered by fleet for one node (deploy/node/user-data.sh.tmpl).
# Every value below was validated by fleet-repo-schema and is inserted quoted for its place.
# Runs once, on first boot (cloud-init user data): it installs fleet-node and its units and
# writes the node's configuration, then runs `fleet-node bootstrap`, which every later boot
# runs again from fleet-node-bootstrap.service. Idempotent if run again.
# FLEET_NODE_ROOT prefixes every path (unset on a node; set by tests in a sandbox).
set -euo pipefail
ROOT="${FLEET_NODE_ROOT:-}"
install -d -m 0755 "$ROOT/var/log"
exec > >(tee -a "$ROOT/var/log/fleet-bootstrap.log") 2>&1

VERSION='28.1'
install -d -m 0755 "$ROOT/usr/local/sbin" "$ROOT/etc/systemd/system" "$ROOT/etc/sysconfig" \
  "$ROOT/etc/fleet-node/digests" "$ROOT/etc/fleet-node/metrics"

# 1. fleet-node and its units (the AMI may ship them; this keeps every node identical).
cat > "$ROOT/usr/local/sbin/fleet-node" <<'FLEET_NODE_HELPER'
#!/bin/bash
# fleet-node: the node side of fleet, installed at /usr/local/sbin/fleet-node by the node's
# user data (deploy/node/user-data.sh.tmpl). One program for everything fleet does on a node:
#
#   fleet-node bootstrap                 every boot (fleet-node-bootstrap.service): data volume
#                                        (formatted only when blank), secrets, node@<version>
#                                        enabled and started
#   fleet-node login                     ECR login through the instance role (node@.service)
#   fleet-node pull VERSION              pull the image of VERSION (node@.service)
#   fleet-node run VERSION               run the daemon's container (node@.service's ExecStart)
#   fleet-node upgrade VERSION [DIGEST]  pull first; only when the pull succeeded, stop and
#                                        disable the running version, enable and start VERSION
#   fleet-node rollback VERSION          as upgrade, back to VERSION on the image digest this
#                                        node pinned for it when it last ran it
#   fleet-node metrics                   run the coin's custom metrics scripts (a timer)
#   fleet-node grow-root                 grow the root partition and file system after fleet
#                                        grew the root volume
#   fleet-node apply-config DIR VERSION restart|no-restart
#                                        install a configuration fleet staged in DIR (over
#                                        SSM): the files that differ, atomically; restart the
#                                        daemon only if something it sees changed
#
# Files (all written by fleet; FLEET_NODE_ROOT prefixes every path, for tests in a sandbox):
#   /etc/sysconfig/node               host settings (systemd EnvironmentFile syntax)
#   /etc/fleet-node/version           the version this node runs
#   /etc/fleet-node/digests/VERSION   the pinned image digest of VERSION, when the coin pins one
#   /etc/fleet-node/container.env     the container's environment, without secrets
#   /etc/fleet-node/secret-id         the coin's Secrets Manager secret (empty: none)
#   /etc/fleet-node/metrics/NAME      custom metrics scripts
#   /etc/fleet-node/logging           the container's log driver, then its name=value options
#   /etc/opt/node-config              container.env plus the secret's keys (rebuilt every boot)
set -euo pipefail

ROOT="${FLEET_NODE_ROOT:-}"
CONF="$ROOT/etc/fleet-node"
HOST_ENV="$ROOT/etc/sysconfig/node"
NODE_CONFIG="$ROOT/etc/opt/node-config"
UNITS="$ROOT/etc/systemd/system"
IMDS="http://169.254.169.254/latest"

die() {
  echo "fleet-node: $*" >&2
  exit 1
}

# Host settings; values are double-quoted with \ " $ ` escaped (systemd's EnvironmentFile
# syntax, which is also the shell's), so reading them expands nothing.
# (From $1 instead when given: a configuration staged by apply-config.)
load_host_env() {
  local file="${1:-$HOST_ENV}"
  [ -f "$file" ] || die "$file is missing: this node was not set up by fleet"
  # shellcheck source=/dev/null
  . "$file"
  : "${IMAGE:?IMAGE is not set in $file}" "${COIN:?COIN is not set in $file}"
  DATA_VOLUME="${DATA_VOLUME:-/node/data}"
  DATA_DEVICE="${DATA_DEVICE:-/dev/sdf}"
  RPC_PORTS="${RPC_PORTS:-}"
  P2P_PORTS="${P2P_PORTS:-}"
}

# A version as a unit instance name: fleet's version rule, nothing a shell or systemctl reads.
check_version() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$ ]] || die "not a version: '$1'"
}

check_digest() {
  [[ "$1" =~ ^sha256:[0-9a-f]{64}$ ]] || die "not an image digest: '$1'"
}

# Write stdin to $1 atomically (a reader sees the old file or the new one, never half).
write_file() {
  local tmp
  tmp="$(dirname "$1")/.$(basename "$1").fleet-tmp"
  cat > "$tmp"
  chmod "${2:-0644}" "$tmp"
  mv -f "$tmp" "$1"
}

imds() {
  local token
  token=$(curl -sf -X PUT "$IMDS/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') \
    || return 1
  curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/$1"
}

# The image reference of version $1: pinned by digest when the coin pins one.
image_ref() {
  local digest
  if [ -f "$CONF/digests/$1" ]; then
    digest=$(cat "$CONF/digests/$1")
    check_digest "$digest"
    echo "$IMAGE@$digest"
  else
    echo "$IMAGE:$1"
  fi
}

# ECR needs a login; the instance role's credentials get it. The password goes through a
# pipe, never an argument or a log. Other registries are pulled as they are.
cmd_login() {
  load_host_env "$@"
  local host="${IMAGE%%/*}" region
  if [[ "$host" =~ ^[0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]]; then
    region="${BASH_REMATCH[1]}"
    aws ecr get-login-password --region "$region" \
      | docker login --username AWS --password-stdin "$host" > /dev/null \
      || die "ECR login to $host failed (does the node's role allow ecr:GetAuthorizationToken?)"
  fi
}

cmd_pull() {
  check_version "$1"
  load_host_env
  local ref out
  ref=$(image_ref "$1")
  cmd_login
  if ! out=$(docker pull "$ref" 2>&1); then
    die "pulling $ref failed: $out"
  fi
}

# Pull the image a configuration staged in $1 names for version $2, when it is not the
# image the node runs now (the repository or the pinned digest changed). On a node fleet did
# not set up (adopted: no /etc/fleet-node/version), its host settings are someone else's
# file, which is never sourced: the image is pulled.
pull_staged() {
  local dir="$1" version="$2" now="" new digest="" out
  if [ -f "$CONF/version" ]; then
    now=$({ load_host_env && image_ref "$version"; } 2> /dev/null) || now=""
  fi
  if [ -f "$dir/digest-keep" ]; then
    [ -f "$CONF/digests/$version" ] && digest=$(cat "$CONF/digests/$version")
  elif [ -f "$dir/digest" ]; then
    digest=$(cat "$dir/digest")
  fi
  new=$(load_host_env "$dir/sysconfig-node"; echo "$IMAGE")
  if [ -n "$digest" ]; then
    check_digest "$digest"
    new="$new@$digest"
  else
    new="$new:$version"
  fi
  [ "$new" = "$now" ] && return 0
  (cmd_login "$dir/sysconfig-node")
  if ! out=$(docker pull "$new" 2>&1); then
    die "pulling $new failed, nothing was changed: $out"
  fi
}

cmd_run() {
  check_version "$1"
  load_host_env
  local ref ip p
  local -a args=(--rm "--name=$COIN-node" "--env-file=$NODE_CONFIG" -v "/node-data:$DATA_VOLUME")
  ref=$(image_ref "$1")
  # RPC is published on the private address only: a node with a public IP never serves RPC
  # to the internet, whatever its security groups say. P2P is published on every address.
  if [ -n "$RPC_PORTS" ]; then
    ip=$(imds meta-data/local-ipv4) || die "cannot read the private address from the instance metadata"
    [[ "$ip" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "the instance metadata gave no IPv4 address: '$ip'"
    for p in ${RPC_PORTS//,/ }; do
      args+=(-p "$ip:$p:$p")
    done
  fi
  for p in ${P2P_PORTS//,/ }; do
    args+=(-p "$p:$p" -p "$p:$p/udp")
  done
  # The log driver on the first line, then one name=value option per line, each one word
  # for docker whatever it holds (validated by fleet: no control characters).
  if [ -s "$CONF/logging" ]; then
    local first=1 line
    while IFS= read -r line || [ -n "$line" ]; do
      if [ "$first" = 1 ]; then
        args+=("--log-driver=$line")
        first=0
      elif [ -n "$line" ]; then
        args+=("--log-opt=$line")
      fi
    done < "$CONF/logging"
  fi
  exec docker run "${args[@]}" "$ref"
}

# The node@ instances that are enabled or loaded, one per line (node@28.1.service).
node_units() {
  {
    systemctl list-units --all --plain --no-legend --type=service 'node@*' | awk '{print $1}'
    for l in "$UNITS"/multi-user.target.wants/node@*.service; do
      if [ -L "$l" ]; then basename "$l"; fi
    done
  } | grep -E '^node@[A-Za-z0-9._+-]+\.service$' | sort -u || true
}

# DIGEST "keep" (from `fleet-node rollback`): the digest this node pinned for VERSION when
# it last ran it stays as it is (the repository pins only its current version).
cmd_upgrade() {
  local version="$1" digest="${2:-}" unit
  check_version "$version"
  [ -z "$digest" ] || [ "$digest" = keep ] || check_digest "$digest"
  load_host_env
  install -d -m 0755 "$CONF/digests"
  if [ "$digest" = keep ]; then
    :
  elif [ -n "$digest" ]; then
    printf '%s\n' "$digest" | write_file "$CONF/digests/$version"
  else
    rm -f "$CONF/digests/$version"
  fi
  # Pull first: a missing tag or a registry error fails here, with the old daemon running.
  cmd_pull "$version"
  for unit in $(node_units); do
    if [ "$unit" != "node@$version.service" ]; then
      systemctl disable --now "$unit"
    fi
  done
  printf '%s\n' "$version" | write_file "$CONF/version"
  systemctl enable "node@$version.service"
  systemctl start "node@$version.service"
}

# Healing: restart the daemon of node@VERSION, which must be the enabled unit (a restart of
# another version would start a second daemon on the same chain). Changes no file.
cmd_restart() {
  local version="$1"
  check_version "$version"
  systemctl is-enabled --quiet "node@$version.service" \
    || die "node@$version is not the enabled unit; not restarting it"
  systemctl restart "node@$version.service"
}

# A consistent snapshot (snapshots.stop_daemon): stop the daemon of node@VERSION, the enabled
# unit, and flush the data file system, so that the snapshot fleet takes next holds a
# database closed cleanly. `fleet-node start VERSION` brings it back. Changes no file.
cmd_stop() {
  local version="$1"
  check_version "$version"
  systemctl is-enabled --quiet "node@$version.service" \
    || die "node@$version is not the enabled unit; not stopping it"
  systemctl stop "node@$version.service"
  sync -f "$ROOT/node-data"
}

# After a consistent snapshot: start node@VERSION again, which must be the enabled unit.
cmd_start() {
  local version="$1"
  check_version "$version"
  systemctl is-enabled --quiet "node@$version.service" \
    || die "node@$version is not the enabled unit; not starting it"
  systemctl start "node@$version.service"
}

# The container's environment: fleet's part, then the secret's keys, fetched by the instance
# role from Secrets Manager (they never pass through fleet or its logs).
write_node_config() {
  local region
  install -d -m 0755 "$ROOT/etc/opt"
  {
    cat "$CONF/container.env"
    if [ -s "$CONF/secret-id" ]; then
      region=$(imds meta-data/placement/region) || die "cannot read the region from the instance metadata"
      aws secretsmanager get-secret-value --region "$region" --secret-id "$(cat "$CONF/secret-id")" \
        --query SecretString --output text \
        | jq -r 'to_entries[] | "\(.key)=\(.value)"'
    fi
  } | write_file "$NODE_CONFIG" 0600
}

# Install $1 as $2 (mode $3) when it differs; say so in CHANGED.
put() {
  if ! cmp -s "$1" "$2"; then
    install -d -m 0755 "$(dirname "$2")"
    write_file "$2" "$3" < "$1"
    CHANGED+=("${2#"$ROOT"}")
  fi
}

# A new configuration staged in DIR by fleet (over SSM): install what differs, atomically
# file by file; restart the daemon only when MODE is `restart` and something it sees changed
# (a metrics script alone restarts nothing). VERSION is the daemon's version as fleet
# recorded it, for a node set up before /etc/fleet-node/version existed.
cmd_apply_config() {
  local dir="$1" version="$2" mode="$3" seen n f
  check_version "$version"
  case "$mode" in restart | no-restart) ;; *) die "not a mode: '$mode'" ;; esac
  [ -f "$CONF/version" ] && version=$(cat "$CONF/version")
  check_version "$version"
  # A restart onto another image pulls that image first: a missing tag or digest fails the
  # step here, before any file changes, and the running daemon stays as it is.
  if [ "$mode" = restart ]; then
    pull_staged "$dir" "$version"
  fi
  [ -f "$CONF/version" ] || { install -d -m 0755 "$CONF"; printf '%s\n' "$version" | write_file "$CONF/version"; }
  CHANGED=()
  # What the container sees: its program, unit, settings, environment and image.
  put "$dir/fleet-node" "$ROOT/usr/local/sbin/fleet-node" 0755
  put "$dir/node@.service" "$UNITS/node@.service" 0644
  put "$dir/sysconfig-node" "$HOST_ENV" 0600
  put "$dir/container.env" "$CONF/container.env" 0600
  put "$dir/secret-id" "$CONF/secret-id" 0600
  # digest-keep: the staged digest is another version's (the node is upgraded next, and
  # the upgrade pins its own); the running version's pin stays.
  if [ -f "$dir/digest-keep" ]; then
    :
  elif [ -f "$dir/digest" ]; then
    put "$dir/digest" "$CONF/digests/$version" 0644
  elif [ -f "$CONF/digests/$version" ]; then
    rm -f "$CONF/digests/$version"
    CHANGED+=("/etc/fleet-node/digests/$version")
  fi
  if [ -f "$dir/logging" ]; then
    put "$dir/logging" "$CONF/logging" 0644
  elif [ -f "$CONF/logging" ]; then
    rm -f "$CONF/logging"
    CHANGED+=("/etc/fleet-node/logging")
  fi
  seen=${#CHANGED[@]}
  # What it does not see.
  put "$dir/fleet-node-bootstrap.service" "$UNITS/fleet-node-bootstrap.service" 0644
  put "$dir/fleet-node-metrics.service" "$UNITS/fleet-node-metrics.service" 0644
  put "$dir/fleet-node-metrics.timer" "$UNITS/fleet-node-metrics.timer" 0644
  install -d -m 0755 "$CONF/metrics"
  for f in "$dir"/metrics/*; do
    if [ -f "$f" ]; then put "$f" "$CONF/metrics/$(basename "$f")" 0644; fi
  done
  for f in "$CONF"/metrics/*; do
    n=$(basename "$f")
    if [ -f "$f" ] && [ ! -f "$dir/metrics/$n" ]; then
      rm -f "$f"
      CHANGED+=("/etc/fleet-node/metrics/$n")
    fi
  done

  load_host_env
  write_node_config
  systemctl daemon-reload
  systemctl enable fleet-node-bootstrap.service
  if compgen -G "$CONF/metrics/*" > /dev/null; then
    systemctl enable fleet-node-metrics.timer
    systemctl start fleet-node-metrics.timer
  else
    systemctl disable --now fleet-node-metrics.timer
  fi
  systemctl enable "node@$version.service"
  echo "fleet-node: changed: ${CHANGED[*]:-nothing}"
  if [ "$mode" = restart ] && [ "$seen" -gt 0 ]; then
    echo "fleet-node: restarting node@$version"
    systemctl restart "node@$version.service"
  fi
}

# Every boot: what the node needs before its daemon starts, idempotently.
cmd_bootstrap() {
  load_host_env
  local version uuid i
  version=$(cat "$CONF/version")
  check_version "$version"

  # The chain data volume: wait for it, format only when it holds no file system, mount by
  # UUID, grow to the volume's size (restored from a smaller snapshot, or grown since).
  for i in $(seq 1 120); do
    [ -e "$ROOT$DATA_DEVICE" ] && break
    [ "$i" = 120 ] && die "data volume $DATA_DEVICE never appeared"
    sleep 1
  done
  if ! blkid "$ROOT$DATA_DEVICE" > /dev/null 2>&1; then
    mkfs.xfs -L node-data "$ROOT$DATA_DEVICE"
  fi
  uuid=$(blkid -s UUID -o value "$ROOT$DATA_DEVICE")
  [[ "$uuid" =~ ^[0-9a-fA-F-]+$ ]] || die "the data volume's file system has no UUID: '$uuid'"
  install -d "$ROOT/node-data"
  touch "$ROOT/etc/fstab"
  grep -q "^UUID=$uuid " "$ROOT/etc/fstab" \
    || echo "UUID=$uuid /node-data xfs defaults,nofail,noatime 0 2" >> "$ROOT/etc/fstab"
  mountpoint -q "$ROOT/node-data" || mount "$ROOT/node-data"
  xfs_growfs -d "$ROOT/node-data" > /dev/null

  write_node_config

  # Name the node for the CloudWatch agent.
  if [ -f "$ROOT/opt/aws/amazon-cloudwatch-agent/etc/common-config.toml" ]; then
    echo "NODE_NAME=${NODE_NAME:-}" | write_file "$ROOT/etc/sysconfig/node-name"
  fi

  systemctl daemon-reload
  if compgen -G "$CONF/metrics/*" > /dev/null; then
    systemctl enable fleet-node-metrics.timer
    systemctl start --no-block fleet-node-metrics.timer
  fi
  # Enabled, so that a reboot, a stop and start or an EC2 maintenance event brings it back.
  systemctl enable "node@$version.service"
  systemctl start --no-block "node@$version.service"
}

# After fleet grew the root volume: grow the root partition (growpart exits 1 when there is
# nothing to grow) and the root file system to fill it.
cmd_grow_root() {
  local src name disk part fstype rc=0
  src=$(findmnt -n -o SOURCE /)
  fstype=$(findmnt -n -o FSTYPE /)
  name=$(basename "$src")
  disk=$(lsblk -n -o PKNAME "$src" | head -n 1)
  if [ -n "$disk" ] && [ -f "$ROOT/sys/class/block/$name/partition" ]; then
    part=$(cat "$ROOT/sys/class/block/$name/partition")
    growpart "/dev/$disk" "$part" || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 1 ] || die "growpart /dev/$disk $part failed ($rc)"
  fi
  case "$fstype" in
    xfs) xfs_growfs -d / > /dev/null ;;
    ext4) resize2fs "$src" ;;
    *) die "the root file system is $fstype; grow it by hand" ;;
  esac
}

cmd_metrics() {
  load_host_env
  local s failed=0
  export COIN NODE_NAME
  for s in "$CONF"/metrics/*; do
    [ -f "$s" ] || continue
    if ! timeout 50 /bin/sh "$s"; then
      echo "fleet-node: metrics script $(basename "$s") failed" >&2
      failed=1
    fi
  done
  return "$failed"
}

case "${1:-}" in
  bootstrap) cmd_bootstrap ;;
  login) cmd_login ;;
  pull) [ $# = 2 ] || die "usage: fleet-node pull VERSION"; cmd_pull "$2" ;;
  run) [ $# = 2 ] || die "usage: fleet-node run VERSION"; cmd_run "$2" ;;
  upgrade)
    [ $# = 2 ] || [ $# = 3 ] || die "usage: fleet-node upgrade VERSION [DIGEST]"
    [ "${3:-}" != keep ] || die "not an image digest: 'keep'"
    cmd_upgrade "$2" "${3:-}"
    ;;
  rollback) [ $# = 2 ] || die "usage: fleet-node rollback VERSION"; cmd_upgrade "$2" keep ;;
  restart) [ $# = 2 ] || die "usage: fleet-node restart VERSION"; cmd_restart "$2" ;;
  stop) [ $# = 2 ] || die "usage: fleet-node stop VERSION"; cmd_stop "$2" ;;
  start) [ $# = 2 ] || die "usage: fleet-node start VERSION"; cmd_start "$2" ;;
  metrics) cmd_metrics ;;
  grow-root) cmd_grow_root ;;
  apply-config)
    [ $# = 4 ] || die "usage: fleet-node apply-config DIR VERSION restart|no-restart"
    cmd_apply_config "$2" "$3" "$4"
    ;;
  *) die "usage: fleet-node bootstrap|login|pull VERSION|run VERSION|upgrade VERSION [DIGEST]|rollback VERSION|restart VERSION|stop VERSION|start VERSION|metrics|grow-root|apply-config DIR VERSION MODE" ;;
esac
FLEET_NODE_HELPER
chmod 0755 "$ROOT/usr/local/sbin/fleet-node"
cat > "$ROOT/etc/systemd/system/node@.service" <<'FLEET_UNIT'
# The node's daemon as a Docker container; the instance name is the version:
#   systemctl enable --now node@28.1
# Host settings (IMAGE, COIN, RPC_PORTS, P2P_PORTS, DATA_VOLUME, …) come from
# /etc/sysconfig/node, the container's environment from /etc/opt/node-config; fleet's user data
# writes them and /usr/local/sbin/fleet-node (deploy/node/fleet-node), which logs in to ECR,
# pulls the image (by its pinned digest when the coin pins one) and runs the container.
# Enabled by fleet-node, so the daemon comes back after a reboot or a stop and start.
[Unit]
Description=Cryptocoin node %i for connection to the blockchain
Requires=docker.service
After=docker.service network-online.target fleet-node-bootstrap.service
Wants=network-online.target
RequiresMountsFor=/node-data

[Service]
EnvironmentFile=/etc/sysconfig/node
TimeoutStartSec=0
# Image pulls of several GB can take minutes; a failed pull fails the start, visibly.
ExecStartPre=/usr/local/sbin/fleet-node pull %i
ExecStartPre=-/usr/bin/docker rm -f ${COIN}-node
ExecStart=/usr/local/sbin/fleet-node run %i
ExecStop=/usr/bin/docker stop -t 600 ${COIN}-node
ExecReload=/usr/bin/docker restart ${COIN}-node
# Daemons flush their databases on SIGTERM; give them time before Docker kills them.
TimeoutStopSec=660
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
FLEET_UNIT
cat > "$ROOT/etc/systemd/system/fleet-node-bootstrap.service" <<'FLEET_UNIT'
# Every boot, before the daemon: mount (and on first boot format) the chain data volume, rebuild
# the container's environment with its secrets, enable and start node@<version>
# (`fleet-node bootstrap`, deploy/node/fleet-node). Enabled by the node's user data.
[Unit]
Description=fleet: prepare this node for its daemon
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/fleet-node bootstrap
TimeoutStartSec=10min

[Install]
WantedBy=multi-user.target
FLEET_UNIT
cat > "$ROOT/etc/systemd/system/fleet-node-metrics.service" <<'FLEET_UNIT'
# The coin's custom_metrics scripts, run by fleet-node-metrics.timer (`fleet-node metrics`).
# Each script publishes its own figures (e.g. `aws cloudwatch put-metric-data`) with the
# node's role; NODE_NAME and COIN are in its environment.
[Unit]
Description=fleet: publish this node's custom metrics
After=fleet-node-bootstrap.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fleet-node metrics
TimeoutStartSec=5min
FLEET_UNIT
cat > "$ROOT/etc/systemd/system/fleet-node-metrics.timer" <<'FLEET_UNIT'
# Every minute, the coin's custom metrics (fleet-node-metrics.service). Enabled by
# `fleet-node bootstrap` when the coin has custom_metrics.
[Unit]
Description=fleet: publish this node's custom metrics every minute

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min
AccuracySec=10s

[Install]
WantedBy=timers.target
FLEET_UNIT

# 2. The node's configuration (read by fleet-node and node@.service).
umask 077
cat > "$ROOT/etc/sysconfig/node" <<'FLEET_HOST_ENV'
IMAGE="123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin"
COIN="bitcoin"
PORTS="8332,8333"
RPC_PORTS="8332"
P2P_PORTS="8333"
DATA_VOLUME="/node/data"
NODE_NAME="node1.bitcoin.internal"
FLEET_HOST_ENV
cat > "$ROOT/etc/fleet-node/container.env" <<'FLEET_CONTAINER_ENV'
DBCACHE_MB=4000
PORT=8333
RPC_PORT=8332
TXINDEX=1
FLEET_CONTAINER_ENV
printf '%s' 'nodes/bitcoin/rpc' > "$ROOT/etc/fleet-node/secret-id"
umask 022
printf '%s\n' "$VERSION" > "$ROOT/etc/fleet-node/version"
printf '%s\n' 'sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265' > "$ROOT/etc/fleet-node/digests/$VERSION"
printf '%s' 'IyEvYmluL3NoCiMgUHVibGlzaCB0aGUgbm9kZSdzIGJsb2NrIGhlaWdodCB0byBDbG91ZFdhdGNoIChydW4gZXZlcnkgbWludXRlIGJ5IHRoZSBub2RlJ3MgdGltZXIpLgojIENyZWRlbnRpYWxzIGNvbWUgZnJvbSB0aGUgY29udGFpbmVyJ3MgZW52aXJvbm1lbnQgKHRoZSBjb2luJ3MgU2VjcmV0cyBNYW5hZ2VyIHNlY3JldCkuCnNldCAtZXUKaGVpZ2h0PSQoZG9ja2VyIGV4ZWMgYml0Y29pbi1ub2RlIGJpdGNvaW4tY2xpIC1ycGNwb3J0PTgzMzIgZ2V0YmxvY2tjb3VudCkKYXdzIGNsb3Vkd2F0Y2ggcHV0LW1ldHJpYy1kYXRhIC0tbmFtZXNwYWNlIE5vZGVzIC0tbWV0cmljLW5hbWUgQmxvY2tIZWlnaHQgXAogIC0tZGltZW5zaW9ucyBDb2luPWJpdGNvaW4sSW5zdGFuY2U9IiQoZWMyLW1ldGFkYXRhIC1pIHwgY3V0IC1kJyAnIC1mMikiIC0tdmFsdWUgIiRoZWlnaHQiCg==' | base64 -d > "$ROOT/etc/fleet-node/metrics/"'block_height'

printf '%s' 'Z2VsZgpnZWxmLWFkZHJlc3M9dWRwOi8vZ3JheWxvZy5pbnRlcm5hbDoxMjIwMQp0YWc9e3suTmFtZX19Cg==' | base64 -d > "$ROOT/etc/fleet-node/logging"

# 3. From now on, every boot prepares the node and starts its daemon; this one too.
systemctl daemon-reload
systemctl enable fleet-node-bootstrap.service
"$ROOT/usr/local/sbin/fleet-node" bootstrap
