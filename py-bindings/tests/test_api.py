"""The public surface: docstrings, signatures, help(), module layout, typing."""

from __future__ import annotations

import inspect
import pathlib
import pydoc

import pytest

import qlearn
from qlearn import QLearner, Stats

PUBLIC_METHODS = [
    "predict", "q_values", "update", "predict_many", "update_many", "to_bytes", "from_bytes",
    "save", "load", "to_json", "from_json", "items", "greedy_policy", "state_values", "to_numpy",
]
PROPERTIES = [
    "epsilon", "n_actions", "learning_rate", "discount_factor", "epsilon_decay", "min_epsilon",
    "initial_q", "algorithm", "exploration", "temperature", "seed", "action_names", "state_bins",
    "config", "stats",
]


def test_module_exports():
    engine = {"FORMAT_VERSION", "MAX_ACTIONS", "MAX_STATE_DIMS", "QLearner", "Stats", "__version__",
              "to_dataframe", "evaluate_export"}
    client = {"Client", "AsyncClient", "EventStream", "AsyncEventStream", "RemoteModel"}
    decisions = {"Decision", "DecisionPage", "DecisionStats", "DecisionsSetting", "EndEvent", "EpisodeEnd",
                 "RewardError", "RewardReceipt", "LoggedDecision", "RewardOutcome",
                 "Evaluation", "EvaluationProgress", "Episode", "EpisodePage"}
    errors = {"QlearnError", "BadRequest", "Unauthorized", "Forbidden", "ModelLimitReached", "NotFound",
              "Conflict", "PayloadTooLarge", "ValidationError", "TooManyRequests", "RateLimited",
              "QuotaExceeded", "ServiceUnavailable", "ConnectionFailed"}
    assert sorted(qlearn.__all__) == sorted(engine | client | decisions | errors)
    assert all(hasattr(qlearn, name) for name in qlearn.__all__)
    assert all(issubclass(getattr(qlearn, e), qlearn.QlearnError) for e in errors)
    assert QLearner.__module__ == "qlearn" and QLearner.__name__ == "QLearner"
    assert Stats.__module__ == "qlearn"
    assert qlearn.MAX_ACTIONS == 4096 and qlearn.MAX_STATE_DIMS == 64
    assert qlearn.__version__.count(".") == 2
    assert qlearn.__doc__ and "QLearner" in qlearn.__doc__


@pytest.mark.parametrize("name", PUBLIC_METHODS + PROPERTIES)
def test_every_public_name_has_a_docstring(name):
    doc = getattr(QLearner, name).__doc__
    assert doc and len(doc.strip()) > 20, name


def test_class_docstrings_describe_arguments():
    assert "n_actions" in QLearner.__doc__ and "Raises:" in QLearner.__doc__
    assert "recent_returns" in Stats.__doc__
    assert Stats.to_dict.__doc__


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("predict", ["self", "state", "explore", "allowed_actions"]),
        ("update", ["self", "state", "action", "reward", "next_state", "done", "truncated",
                    "next_action", "next_allowed_actions"]),
        ("update_many", ["self", "states", "actions", "rewards", "next_states", "dones",
                         "truncateds", "next_actions"]),
        ("predict_many", ["self", "states", "explore"]),
        ("q_values", ["self", "state"]),
        ("save", ["self", "path"]),
    ],
)
def test_signatures_are_introspectable(name, params):
    sig = inspect.signature(getattr(QLearner, name))
    assert list(sig.parameters) == params
    if "explore" in sig.parameters:
        assert sig.parameters["explore"].default is True


def test_constructor_signature_shows_the_defaults():
    sig = inspect.signature(QLearner)
    p = sig.parameters
    assert p["learning_rate"].default == 0.1
    assert p["discount_factor"].default == 0.95
    assert p["algorithm"].default == "q_learning"
    assert p["seed"].default is None
    assert p["exploration"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(QLearner.from_bytes).parameters.keys() == {"data"}


def test_help_renders_the_docs():
    text = pydoc.render_doc(QLearner, renderer=pydoc.plaintext)
    for needle in ["predict(self, /, state, explore=True, allowed_actions=None)",
                   "update_many(", "Returns:", "TD error", "epsilon", "from_bytes(data)"]:
        assert needle in text, needle


def test_stub_and_marker_ship_with_the_package():
    pkg = pathlib.Path(qlearn.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "_qlearn.pyi").read_text()
    for name in PUBLIC_METHODS + PROPERTIES:
        assert f"def {name}(" in stub, name
