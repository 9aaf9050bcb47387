#!/bin/sh
# Publish the node's block height to CloudWatch (run every minute by the node's timer).
# Credentials come from the container's environment (the coin's Secrets Manager secret).
set -eu
height=$(docker exec litecoin-node litecoin-cli -rpcport=9332 getblockcount)
aws cloudwatch put-metric-data --namespace Nodes --metric-name BlockHeight \
  --dimensions Coin=litecoin,Instance="$(ec2-metadata -i | cut -d' ' -f2)" --value "$height"
