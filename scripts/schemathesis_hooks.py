"""Schemathesis hooks for scripts/schemathesis.sh.

Some rules cannot be written in JSON Schema because they depend on the
model the request names (an action below *its* n_actions, PATCH keeping its
n_actions and state_bins), on another member (action_names has n_actions
entries, state_bins' low < high), on the clock (a key's expiry in the
future) or on a list (the common-password list). For those operations the
script lets positive_data_acceptance take a 422; this check then narrows it
back: a 422 on schema-valid data must be one of these rules, told apart by
the error's `code` and `field` (its JSON path). Any other 422 fails.
"""

import json
import re

import schemathesis
from hypothesis import strategies as st

ANY = None
ITEM = r"(experiences\[\d+\]\.)?"

# operation -> [(error code, regular expression of the field or ANY)]
EXPECTED_422 = {
    # The model's n_actions bounds every action index, its state_bins the
    # states it takes (arrays of as many numbers)...
    # baseline_action: an action of *that* model, given only to one that
    # logs decisions.
    "POST /predict": [
        ("invalid_action", ANY),
        ("invalid_state", ANY),
        ("invalid_field", r"baseline_action"),
    ],
    "POST /predict/probabilities": [("invalid_action", ANY), ("invalid_state", ANY)],
    # ...and SARSA (a PATCH may switch the model to it) needs next_action.
    "POST /update": [
        ("invalid_action", ANY),
        ("invalid_state", ANY),
        ("invalid_field", r"next_action"),
    ],
    "POST /update/batch": [
        ("invalid_action", ANY),
        ("invalid_state", ANY),
        ("invalid_field", ITEM + r"next_action"),
    ],
    # A truncated episode needs next_state (a rule across two members).
    "POST /episodes/end": [
        ("invalid_action", ANY),
        ("invalid_state", ANY),
        ("invalid_field", r"next_state"),
    ],
    # action_names has n_actions entries; each state_bins dimension low < high.
    "POST /models": [("invalid_field", r"action_names|state_bins\[\d+\]")],
    # n_actions and state_bins cannot change; action_names as above.
    "PATCH /models/{id}": [
        ("invalid_field", r"n_actions|state_bins|state_bins\[\d+\]|action_names")
    ],
    # An evaluation request is checked against the model (it must log
    # decisions; a candidate's config is validated as the model's changed
    # configuration) and its members' ranges; the document describes the
    # body in prose (docs/http-api.md), so any invalid_field is such a rule.
    "POST /models/{id}/evaluations": [("invalid_field", ANY)],
    # Bytes of a model in the binary format (its header, checksum and body).
    "POST /models/import": [("invalid_model", ANY)],
    # An expiry in the future and at most 10 years away (the clock).
    "POST /api-keys": [("invalid_field", r"expires_at")],
    # Not one of the common breached passwords (a list).
    "POST /me/password": [("invalid_field", r"new_password")],
    "POST /register": [("invalid_field", r"password")],
}


@schemathesis.check
def payload_too_large_only_over_the_limit(ctx, response, case):
    """A 413 only for a body over the limit its message (and the document) states."""
    if response.status_code != 413:
        return None
    match = re.search(r"limit of (\d+) bytes", response.text)
    if match is None:
        raise AssertionError(f"413 without its limit: {response.text}")
    body = response.request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if len(body) <= int(match.group(1)):
        raise AssertionError(f"413 for a body of {len(body)} bytes: {response.text}")
    return None


@schemathesis.check
def only_unwritable_rules_reject_valid_data(ctx, response, case):
    """A 422 on schema-valid data must be one of the rules JSON Schema cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    expected = EXPECTED_422.get(case.operation.label)
    if expected is None:
        return None  # positive_data_acceptance reports it
    try:
        error = response.json()["error"]
    except Exception as exc:  # noqa: BLE001 - any unreadable body fails the check
        raise AssertionError(f"422 without an error body: {exc}") from None
    code, field = error.get("code"), error.get("field")
    for want_code, want_field in expected:
        if code == want_code and (
            want_field is None or (field is not None and re.fullmatch(want_field, field))
        ):
            return None
    raise AssertionError(
        f"schema-valid data refused with {code} (field {field!r}): {error.get('message')}"
    )


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """The decision export: one JSON value per line, read as a list (its schema's form)."""
    return [json.loads(line) for line in response.content.decode("utf-8").splitlines() if line]


@schemathesis.hook
def flatmap_query(context, query):
    """Open the event stream with the bearer credential, not only with generated tickets.

    A generated `ticket` is never a real one (401), so half the cases drop
    it and the stream itself (its headers and events) is checked too.
    """
    operation = getattr(context, "operation", None)
    if operation is None or operation.path != "/models/{id}/events" or not query or "ticket" not in query:
        return st.just(query)
    without = {k: v for k, v in query.items() if k != "ticket"}
    return st.sampled_from([query, without])
