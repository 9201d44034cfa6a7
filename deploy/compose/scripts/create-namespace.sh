#!/bin/sh
# Create the namespace workers use, unless it exists (idempotent).
set -eu
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do sleep 1; done
temporal operator namespace describe --address "$TEMPORAL_ADDRESS" -n "$DEFAULT_NAMESPACE" >/dev/null 2>&1 \
  || temporal operator namespace create --address "$TEMPORAL_ADDRESS" -n "$DEFAULT_NAMESPACE" --retention 30d
echo "namespace $DEFAULT_NAMESPACE ready"
