#!/bin/bash
# fleet node bootstrap, rendered by fleet for one node (deploy/node/user-data.sh.tmpl).
# Every value below was validated by fleet-repo-schema and is inserted quoted for its place.
# Runs once, on first boot (cloud-init user data). Idempotent if run again.
set -euo pipefail
exec > >(tee -a /var/log/fleet-bootstrap.log) 2>&1

COIN='bitcoin'
VERSION='28.1'
NODE_NAME='node1.bitcoin.internal'
DATA_DEVICE=/dev/sdf
SECRET_ID='nodes/bitcoin/rpc'

# 1. Host and container configuration (read by node@.service).
install -d -m 0755 /etc/sysconfig /etc/opt
umask 077
cat > /etc/sysconfig/node <<'FLEET_HOST_ENV'
IMAGE="123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin"
COIN="bitcoin"
PORTS="8332,8333"
PUBLISH="-p 8332:8332 -p 8333:8333"
DATA_VOLUME="/node/data"
NODE_NAME="node1.bitcoin.internal"
FLEET_HOST_ENV
cat > /etc/opt/node-config <<'FLEET_CONTAINER_ENV'
DBCACHE_MB=4000
PORT=8333
RPC_PORT=8332
TXINDEX=1
FLEET_CONTAINER_ENV
umask 022

# Secrets (if the coin names one) are appended from Secrets Manager by the instance role;
# they never pass through fleet, its logs or this user data.
if [ -n "$SECRET_ID" ]; then
  region=$(TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') \
    && curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/placement/region)
  aws secretsmanager get-secret-value --region "$region" --secret-id "$SECRET_ID" \
    --query SecretString --output text \
    | jq -r 'to_entries[] | "\(.key)=\(.value)"' >> /etc/opt/node-config
fi

# 2. Name the node for the CloudWatch agent.
if [ -f /opt/aws/amazon-cloudwatch-agent/etc/common-config.toml ]; then
  echo "NODE_NAME=$NODE_NAME" > /etc/sysconfig/node-name
fi

# 3. The chain data volume: wait for it, format on first boot only, mount by UUID.
for _ in $(seq 1 120); do
  [ -b "$DATA_DEVICE" ] && break
  sleep 1
done
[ -b "$DATA_DEVICE" ] || { echo "data volume $DATA_DEVICE never appeared" >&2; exit 1; }
if ! blkid "$DATA_DEVICE" >/dev/null 2>&1; then
  mkfs.xfs -L node-data "$DATA_DEVICE"
fi
install -d /node-data
uuid=$(blkid -s UUID -o value "$DATA_DEVICE")
grep -q "UUID=$uuid" /etc/fstab || echo "UUID=$uuid /node-data xfs defaults,nofail,noatime 0 2" >> /etc/fstab
mountpoint -q /node-data || mount /node-data
# A volume restored from a smaller snapshot, or grown since: use all of it.
xfs_growfs -d /node-data

# 4. The unit (the AMI ships it; this keeps nodes on older AMIs identical).
cat > /etc/systemd/system/node@.service <<'FLEET_UNIT'
# The node's daemon as a Docker container; the instance name is the version:
#   systemctl start node@28.1
# Host settings (IMAGE, COIN, PORTS, DATA_VOLUME, …) come from /etc/sysconfig/node, the
# container's environment from /etc/opt/node-config; fleet's user data writes both on first
# boot (deploy/node/user-data.sh.tmpl). Installed by the node AMI (or by that user data).
[Unit]
Description=Cryptocoin node %i for connection to the blockchain
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
RequiresMountsFor=/node-data

[Service]
EnvironmentFile=/etc/sysconfig/node
TimeoutStartSec=0
# Image pulls of several GB can take minutes; a failed pull fails the start, visibly.
ExecStartPre=-/usr/bin/docker rm -f ${COIN}-node
ExecStartPre=/usr/bin/docker pull ${IMAGE}:%i
# $PUBLISH is unbraced on purpose: systemd splits it into `-p host:container` words.
ExecStart=/usr/bin/docker run --rm --name=${COIN}-node --env-file=/etc/opt/node-config $PUBLISH -v /node-data:${DATA_VOLUME} ${IMAGE}:%i
ExecStop=/usr/bin/docker stop -t 600 ${COIN}-node
ExecReload=/usr/bin/docker restart ${COIN}-node
# Daemons flush their databases on SIGTERM; give them time before Docker kills them.
TimeoutStopSec=660
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
FLEET_UNIT
systemctl daemon-reload

# 5. Start the daemon at its version.
systemctl start "node@$VERSION"
