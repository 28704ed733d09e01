"""Smoke test of the experiment scripts: search, bookkeeping, CSV/PNG/report, with training stubbed out.

The real training runs take minutes per model on CPU (see experiments/README.md); here
``common.train_proxy`` is replaced by a stub so the test checks everything around it in seconds.
"""
import pytest

pytest.importorskip("matplotlib")

from experiments import common, compound_vs_single, grid_search  # noqa: E402


@pytest.fixture
def fake_training(monkeypatch):
    calls = []

    def fake(*, depth=1.0, width=1.0, resolution=common.BASE_RESOLUTION, family="efficientnet", seed=0, steps=2,
             **kw):
        calls.append((family, depth, width, resolution))
        return {"accuracy": 0.5 + 0.01 * len(calls), "loss": 1.0, "seconds": 0.0, "params": 1, "macs": 1000 * len(calls),
                "family": family, "depth": depth, "width": width, "resolution": resolution, "seed": seed,
                "steps": steps}

    monkeypatch.setattr(common, "train_proxy", fake)
    return calls


def test_grid_search_smoke_writes_csv_png_report(tmp_path, fake_training):
    grid_search.main(["grid_search", "--smoke", "--out", str(tmp_path)])
    assert fake_training  # base + the candidates trained
    for name in ("candidates.csv", "accuracy_vs_macs.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "alpha" in report and "ImageNet" in report


def test_per_dimension_smoke_for_a_family(tmp_path, fake_training):
    compound_vs_single.main(["compound_vs_single", "--smoke", "--family", "resnet18", "--out", str(tmp_path)])
    assert all(call[0] == "resnet18" for call in fake_training)
    for name in ("results.csv", "accuracy_vs_macs.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
