"""The Python examples run and do what they claim (examples/python)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_taxi_greedy_policy_is_near_optimal():
    pytest.importorskip("gymnasium", reason="gymnasium not installed: the Taxi example did not run")
    text = run("taxi.py", "--episodes", "3000", "--seed", "0")
    mean = float(re.search(r"mean return (-?[0-9.]+)", text.splitlines()[-1]).group(1))
    # The optimum averaged over start states is about 7.9; 100 evaluation
    # episodes of an optimal policy land within about +-0.5 of it.
    assert mean >= 7.0, text


def test_benchmark_script_runs():
    text = run("bench.py", "--steps", "3000", "--batch", "3000", "--repeat", "1")
    assert "dict Q-table" in text and "update_many" in text and "predict_many" in text


def test_taxi_service_serves_the_trained_model_and_gives_it_back(roomy):
    pytest.importorskip("gymnasium", reason="gymnasium not installed: the Taxi example did not run")
    pytest.importorskip("httpx", reason="httpx not installed: the client example did not run")
    text = run("taxi_service.py", "--url", roomy.base, "--email", "taxi@example.com",
               "--password", "correct horse battery", "--episodes", "3000", "--eval-episodes", "20")
    served = float(re.search(r"through the service, 20 episodes: mean return (-?[0-9.]+)", text).group(1))
    assert served >= 6.0, text
    assert "(identical: True)" in text and "Q-values identical to the local ones: True" in text, text


def test_client_benchmark_script_runs(roomy):
    pytest.importorskip("httpx", reason="httpx not installed: the client benchmark did not run")
    text = run("bench_client.py", "--url", roomy.base, "--experiences", "3000", "--repeat", "1")
    assert "qlearn.Client.update_many" in text and "raw httpx" in text, text


def test_news_recommendation_learns_from_delayed_clicks_in_process():
    text = run("news_recommendation.py", "--rounds", "6000", "--block", "1000", "--seed", "0")
    rates = [float(r) for r in re.findall(r"click rate (0\.[0-9]+)$", text, re.M)]
    assert len(rates) == 6, text
    # Random articles click 0.15 of the time, the best ones 0.50: the rate
    # rises from the first block (half exploring) to the last.
    assert rates[-1] >= rates[0] + 0.1 and rates[-1] >= 0.42, text
    right = int(re.search(r"learned the best article for (\d) of 8", text).group(1))
    assert right >= 7, text


def test_news_recommendation_learns_through_the_service(roomy):
    pytest.importorskip("httpx", reason="httpx not installed: the client example did not run")
    text = run("news_recommendation.py", "--url", roomy.base, "--email", "news@example.com",
               "--password", "correct horse battery", "--rounds", "3000", "--block", "500")
    rates = [float(r) for r in re.findall(r"click rate (0\.[0-9]+)$", text, re.M)]
    assert len(rates) == 6 and rates[-1] >= rates[0] + 0.05, text
    assert "through the service" in text, text
