#!/usr/bin/env bash
# Export lines for your own shell, read from a running cluster's head (over SSH, by `ray exec`):
# Ray's token (for `ray job submit`, `ray dashboard` clients) and the tracking server's credentials
# (for `mlflow ui`, analysis/pareto.py and analysis/export.py through the forwarded port 5000).
#
#   eval "$(cluster/credentials.sh ray_cluster.yaml)"
#
# The secrets folder is the one the cluster file's start commands use (<shared mount>/.snnconv-secrets).
set -euo pipefail
cluster=${1:?usage: $0 CLUSTER_YAML}
secrets=$(grep -o '/[^ ]*/\.snnconv-secrets' "$cluster" | head -n 1)
[ -n "$secrets" ] || { echo "no .snnconv-secrets folder named in $cluster" >&2; exit 2; }
# `ray exec` runs with a terminal (-tt): strip its carriage returns and keep the marked lines only
ray exec "$cluster" "printf 'SNNCONV %s\n' \"\$(cat $secrets/ray_auth_token)\"; sed 's/^/SNNCONV_ENV /' $secrets/mlflow.env" \
    2>/dev/null | tr -d '\r' | while read -r marker value; do
  case "$marker" in
    SNNCONV) printf 'export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=%q\n' "$value" ;;
    SNNCONV_ENV) printf 'export %s=%q\n' "${value%%=*}" "${value#*=}" ;;
  esac
done
