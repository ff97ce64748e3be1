#!/usr/bin/env bash
# The API contract test: Schemathesis (pinned below) runs every check with
# positive and negative data against the real server, once as a free user
# (its real tier limits: 429 and 403 are documented answers) and once as an
# enterprise user (made with the admin CLI, a limits file lifting its rate
# limit so the run is not stopped by it). Each run must end with 0 failures.
#
#   scripts/schemathesis.sh              # both users, ~30 examples per operation
#   EXAMPLES=100 scripts/schemathesis.sh # more examples
#   TIERS=enterprise scripts/schemathesis.sh
#
# The server is the debug binary (built by `cargo test` already), on a free
# 127.0.0.1 port with a temporary SQLite database, stopped by its pid. The
# virtualenv is $QLEARN_SCHEMATHESIS_VENV or ./.venv-schemathesis, created on
# first use. Environment: EXAMPLES (30), TIERS ("free enterprise"), SEED
# (fixed by default; `random` for a new one),
# CARGO_TARGET_DIR, QLEARN_SAAS_HOST (a saas-host binary to use instead).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${QLEARN_SCHEMATHESIS_VENV:-$ROOT/.venv-schemathesis}"
EXAMPLES="${EXAMPLES:-30}"
# A fixed seed keeps CI reproducible; SEED=random (or a number) explores.
SEED="${SEED:-20261205}"
[[ "$SEED" == random ]] && SEED="$RANDOM$RANDOM"
TIERS="${TIERS:-free enterprise}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -n "${QLEARN_SAAS_HOST:-}" ]; then
  BIN="$QLEARN_SAAS_HOST"
else
  echo "== building saas-host (cargo build -p saas-host)"
  CARGO_TARGET_DIR="$TARGET" cargo build --quiet -p saas-host --bin saas-host
  BIN="$TARGET/debug/saas-host"
fi

TMP="$(mktemp -d)"
# shellcheck source=scripts/server-lib.sh
source "$ROOT/scripts/server-lib.sh"

# Only the enterprise tier is lifted; the free tier keeps its real limits.
cat > "$TMP/limits.json" <<'JSON'
{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 100000000,
                "burst": 100000000, "bulk_per_minute": 1000000, "max_event_streams": 1000}}
JSON
export DATABASE_URL="sqlite://$TMP/st.db" LIMITS_FILE="$TMP/limits.json" LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn,saas_host::server=info}"
export SECRET_KEY="schemathesis secret key of at least thirty-two bytes"
# The billing webhook is exercised as configured (without a secret it is a
# 404 for every request, which says nothing of its contract).
export BILLING_WEBHOOK_SECRET="whsec_schemathesis_only"

json_field() { "$VENV/bin/python" -c "import sys, json; print(json.load(sys.stdin)$1)"; }

# Register both users first; the admin CLI needs the SQLite file to itself.
start_server
declare -A TOKEN
for tier in $TIERS; do
  email="st-$tier-$RANDOM@example.com"
  curl -sf -X POST "http://$ADDR/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"schemathesis password $tier\"}" > "$TMP/reg-$tier.json"
  echo "$email" > "$TMP/email-$tier"
done
stop_server
for tier in $TIERS; do
  [[ "$tier" == free ]] || "$BIN" admin set-tier "$(cat "$TMP/email-$tier")" "$tier"
done
start_server
BASE="http://$ADDR"

failed=()
for tier in $TIERS; do
  # Log in again: the tier change is in the new token's user.
  email="$(cat "$TMP/email-$tier")"
  curl -sf -X POST "$BASE/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"schemathesis password $tier\"}" > "$TMP/login-$tier.json"
  token="$(json_field "['access_token']" < "$TMP/login-$tier.json")"
  model="$(curl -sf "$BASE/models" -H "authorization: Bearer $token" | json_field "[0]['id']")"
  # The user's default model stands for {id} where a real model says more
  # than an unknown id would (404), and request bodies name it half the
  # time. The stateful phase runs on its own afterwards, without these
  # fixed ids: it follows the ids the responses give (and may delete the
  # default model).
  cat > "$TMP/st-$tier.toml" <<TOML
[dictionaries.models]
values = ["$model"]

[parameters]
"body.model_id" = { dictionary = "models", probability = 0.5 }

[checks.negative_data_rejection]
# A body over the route's byte limit is refused before it is parsed.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path-regex = '^/(models/\{id\}|status/\{id\})'
exclude-method = "DELETE"
parameters = { "id" = "$model" }

[[operations]]
include-path = "/models/{id}/events"
request-timeout = 2

# Rules JSON Schema cannot state (and 413: a schema-valid list can be longer
# than the body limit): scripts/schemathesis_hooks.py names them and fails
# any other 422, and a 413 for a body under the limit.
[[operations]]
include-name-regex = '^(POST /models/\{id\}/evaluations|POST /predict|POST /predict/probabilities|POST /update|POST /update/batch|POST /episodes/end|POST /models|PATCH /models/\{id\}|POST /models/import|POST /api-keys|POST /me/password|POST /register)\$'
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429", "5xx"]

# The webhook's signature is an HMAC of the raw body under the server's
# secret, which no schema can state: a schema-valid Stripe-Signature is
# refused as 400 invalid_signature (the signed cases are saas-host's
# tests/api/billing.rs).
[[operations]]
include-name = "POST /billing/webhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "413", "422", "429", "5xx"]

TOML
  sed -e '/^\[dictionaries.models\]/,/^"body.model_id"/d' -e '/^\[\[operations\]\]$/,$d' \
    "$TMP/st-$tier.toml" > "$TMP/st-$tier-stateful.toml"
  sed -n '/^# Rules JSON Schema/,$p' "$TMP/st-$tier.toml" >> "$TMP/st-$tier-stateful.toml"
  for phases in examples,coverage,fuzzing stateful; do
    config="$TMP/st-$tier.toml"
    [[ "$phases" == stateful ]] && config="$TMP/st-$tier-stateful.toml"
    printf '\n== schemathesis: %s user, phases %s (%s examples per operation)\n' "$tier" "$phases" "$EXAMPLES"
    if ! PYTHONPATH="$ROOT/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks \
        "$VENV/bin/schemathesis" --no-color --config-file "$config" run "$BASE/openapi.json" \
        --checks all --mode all --phases "$phases" --max-examples "$EXAMPLES" --seed "$SEED" \
        --header "Authorization: Bearer $token" --request-timeout 10 --output-truncate true \
        --generation-database none; then
      failed+=("$tier/$phases")
    fi
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "schemathesis found failures for: ${failed[*]}"
  exit 1
fi
echo "schemathesis: 0 failures for: $TIERS"
