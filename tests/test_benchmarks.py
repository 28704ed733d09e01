"""Smoke tests of benchmarks/throughput.py, checkpoint_save.py and profile_step.py: they run and produce numbers
(and a table). Never asserts speed."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def run_throughput(*flags):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", *flags],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("| impl | img/s") for line in lines) and "|---|" in proc.stdout, proc.stdout
    return proc.stdout, json.loads(lines[-1])


def assert_rate(result):
    assert result["img_s"] > 0 and math.isfinite(result["img_s"]), result
    assert all(r > 0 and math.isfinite(r) for r in result["img_s_all"]), result
    assert len(result["img_s_all"]) == 2


@pytest.mark.slow
def test_quick_all_peers_infer():
    """Every peer installed with the test extras runs in the same process; timm is run or skipped with a note."""
    out, summary = run_throughput("--impl", "all", "--mode", "infer")
    assert summary["img_s"] > 0 and math.isfinite(summary["img_s"])
    impls = summary["impls"]
    for impl in ("ours", "keras", "torch"):
        assert_rate(impls[impl])
        assert summary["ratios"].get(impl, 1.0) > 0
    assert "img_s" in impls["timm"] or "timm" in impls["timm"]["skipped"]
    assert impls["ours"]["compile_s"] > 0 and impls["ours"]["inproc_peak_rss_mb"] > 0
    assert {"keras", "torch"} <= set(summary["ratios"])


@pytest.mark.slow
def test_quick_ours_train():
    """The full jitted train step (optimizer, BN update, EMA): the headline figure."""
    out, summary = run_throughput("--impl", "ours", "--mode", "train")
    assert_rate(summary["impls"]["ours"])
    assert summary["img_s"] == summary["impls"]["ours"]["img_s"]
    assert summary["mode"] == "train" and summary["compile_s"] > 0
    assert summary["impls"]["ours"]["self_peak_rss_mb"] > 0


@pytest.mark.slow
def test_checkpoint_save_reports_blocking_times_before_and_after():
    """benchmarks/checkpoint_save.py on B0, one timed save each way: JSON with positive times."""
    script = SCRIPT.parent / "checkpoint_save.py"
    proc = subprocess.run([sys.executable, str(script), "--models", "efficientnet_b0", "--repeats", "1"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    result = report["models"]["efficientnet_b0"]
    assert result["state_mb"] > 50 and report["jax"] and report["orbax"]
    assert all(s > 0 and math.isfinite(s) for s in result["before_s"] + result["after_s"]), result


@pytest.mark.slow
def test_profile_step_names_where_the_time_goes():
    """benchmarks/profile_step.py on tiny settings: XLA's operation times read back from the trace, classed."""
    script = SCRIPT.parent / "profile_step.py"
    proc = subprocess.run([sys.executable, str(script), "--batch", "2", "--resolution", "64", "--steps", "1"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["op_s_per_step"] > 0 and report["top_ops"]
    assert abs(sum(kind["share"] for kind in report["by_kind"].values()) - 1) < 1e-6
    assert {"matmul (1x1 convolutions, dense)", "slices (depthwise taps)"} <= set(report["by_kind"])
