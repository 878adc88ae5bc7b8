#!/bin/sh
# Registers Marina's namespace and search attributes once the Temporal server answers. Idempotent without
# `|| true`: an existing namespace is left as it is, and `temporal operator search-attribute create` lets through
# a search attribute that exists with the same type (Temporal 1.32 on SQL visibility skips it) but fails on one
# with another type, which is a real conflict. Keep the list in sync with SEARCH_ATTRIBUTES in
# workflows/definitions.ts (test/deploy.test.ts checks it).
set -eu

: "${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS to the Temporal frontend, host:port}"
ns="${MARINA_NAMESPACE:-default}"
retention="${MARINA_NAMESPACE_RETENTION:-7d}"
attempts="${TEMPORAL_HEALTH_CHECK_MAX_ATTEMPTS:-60}"

i=1
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  if [ "$i" -ge "$attempts" ]; then
    echo "Temporal at $TEMPORAL_ADDRESS is not healthy after $attempts attempts, 5 s apart" >&2
    exit 1
  fi
  i=$((i + 1))
  sleep 5
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$ns" >/dev/null 2>&1; then
  echo "namespace $ns: exists"
else
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$ns" --retention "$retention"
  echo "namespace $ns: created (retention $retention)"
fi

# A new namespace reaches the server's namespace cache some seconds after it is created; until then operator calls
# on it answer "not found". Wait for it (bounded) rather than retry the create, which would hide a real conflict.
i=1
until temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$ns" >/dev/null 2>&1; do
  if [ "$i" -ge "$attempts" ]; then
    temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$ns" >/dev/null
    exit 1
  fi
  i=$((i + 1))
  sleep 1
done

set --
for sa in MarinaPool MarinaHost MarinaImage MarinaJobState MarinaClient MarinaHostState; do
  set -- "$@" --name "$sa" --type Keyword
done
temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" --namespace "$ns" "$@"
echo "search attributes in $ns: registered"
