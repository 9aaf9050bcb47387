#!/bin/sh
# Publish hornet's confirmed milestone index to CloudWatch.
set -eu
index=$(curl -sf http://127.0.0.1:14265/api/core/v2/info | jq '.status.confirmedMilestone.index')
aws cloudwatch put-metric-data --namespace Nodes --metric-name MilestoneIndex \
  --dimensions Coin=iota,Instance="$(ec2-metadata -i | cut -d' ' -f2)" --value "$index"
