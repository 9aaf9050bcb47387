#!/bin/sh
# Publish the node's block height to CloudWatch (run every minute by the node's timer).
# Credentials come from the container's environment (the coin's Secrets Manager secret).
set -eu
height=$(docker exec bitcoin-node bitcoin-cli -rpcport=8332 getblockcount)
aws cloudwatch put-metric-data --namespace Nodes --metric-name BlockHeight \
  --dimensions Coin=bitcoin,Instance="$(ec2-metadata -i | cut -d' ' -f2)" --value "$height"
