#!/usr/bin/env bash
# Syntax checks for the deployment files (no Docker engine runs here):
# nginx -t on the config with the upstream hosts pointed at loopback, and a
# YAML parse of the compose file with its services listed.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed 's/app[12]:8000/127.0.0.1:8000/' nginx.conf > "$tmp"
nginx -t -c "$tmp"
python3 - <<'PY'
import yaml
d = yaml.safe_load(open("docker-compose.yml"))
assert {"postgres", "app1", "app2", "nginx"} <= set(d["services"]), d["services"].keys()
print("docker-compose.yml: services", sorted(d["services"]))
PY
grep -q '^FROM .* AS build' Dockerfile && grep -q '^ENTRYPOINT' Dockerfile && echo "Dockerfile: stages and entrypoint present"
