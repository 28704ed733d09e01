"""Progressive learning: the stage schedule (pure Python), exact resumption of the staged input, and one
tiny 2-stage run of the training program."""
import logging

import numpy as np
import pytest

from train import input_pipeline, progressive
from train.configs import digits

FINAL = {"image_size": 300, "randaugment_magnitude": 15.0, "mixup_alpha": 0.2, "dropout": 0.3}
INITIAL = {"image_size": 128, "randaugment_magnitude": 5.0, "mixup_alpha": 0.0, "dropout": 0.1}


def test_stages_interpolate_from_initial_to_final():
    """EfficientNetV2 Algorithm 1: M equal stages, stage i at initial + (final - initial) * i / (M - 1)."""
    stages = progressive.schedule(100, 4, INITIAL, FINAL)
    assert [(s.start_step, s.end_step) for s in stages] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert [s.image_size for s in stages] == [128, 185, 243, 300]  # 185.33 and 242.67 rounded
    np.testing.assert_allclose([s.randaugment_magnitude for s in stages], [5, 25 / 3, 35 / 3, 15])
    np.testing.assert_allclose([s.mixup_alpha for s in stages], [0, 0.2 / 3, 0.4 / 3, 0.2])
    np.testing.assert_allclose([s.dropout for s in stages], [0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    last = stages[-1]  # exactly the config's values: what evaluation and export assume
    assert (last.image_size, last.randaugment_magnitude, last.mixup_alpha, last.dropout) == tuple(FINAL.values())
    assert [s.index for s in stages] == [0, 1, 2, 3] and {s.num_stages for s in stages} == {4}
    assert "stage 2/4, steps 25-49: 185 px, RandAugment magnitude 8.33333" in stages[1].describe()


def test_uneven_steps_cover_every_step_once():
    for total, m in [(10, 3), (7, 7), (1001, 4), (5, 2)]:
        stages = progressive.schedule(total, m, INITIAL, FINAL)
        assert stages[0].start_step == 0 and stages[-1].end_step == total
        assert all(a.end_step == b.start_step for a, b in zip(stages, stages[1:]))
        lengths = [s.end_step - s.start_step for s in stages]
        assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_off_and_partial_settings():
    for off in (0, 1):
        (only,) = progressive.schedule(50, off, INITIAL, FINAL)
        assert (only.start_step, only.end_step, only.image_size, only.dropout) == (0, 50, 300, 0.3)
    stages = progressive.schedule(9, 3, {"image_size": 96, "dropout": None}, {**FINAL, "randaugment_magnitude": None})
    assert [s.image_size for s in stages] == [96, 198, 300]
    assert {s.dropout for s in stages} == {0.3} and {s.randaugment_magnitude for s in stages} == {None}
    assert {s.mixup_alpha for s in stages} == {0.2}


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="more than the 3 training steps"):
        progressive.schedule(3, 4, INITIAL, FINAL)
    with pytest.raises(ValueError, match=">= 0"):
        progressive.schedule(3, -1, INITIAL, FINAL)
    with pytest.raises(ValueError, match="image_sise"):
        progressive.schedule(10, 2, {"image_sise": 3}, FINAL)


def config(**progressive_settings):
    cfg = digits.get_config("runlocal")
    cfg.image_size, cfg.randaugment = 40, (2, 9)
    cfg.progressive.update(progressive_settings)
    return cfg


def test_stages_from_a_config():
    cfg = config(stages=2, initial_image_size=32, initial_randaugment_magnitude=3.0)
    first, last = progressive.stages_of(cfg, 6, final_dropout=0.2)
    assert (first.image_size, first.randaugment_magnitude, first.dropout) == (32, 3.0, 0.2)
    assert (last.image_size, last.randaugment_magnitude, last.mixup_alpha) == (40, 9.0, 0.0)
    first_config = progressive.stage_config(cfg, first)
    assert (first_config.image_size, tuple(first_config.randaugment)) == (32, (2, 3.0))
    assert (cfg.image_size, tuple(cfg.randaugment)) == (40, (2, 9))  # the run's config is untouched
    assert progressive.stage_config(cfg, last) is cfg
    (only,) = progressive.stages_of(digits.get_config("runlocal"), 6, final_dropout=0.0)  # off by default
    assert (only.image_size, only.end_step) == (32, 6)
    cfg.randaugment = None
    with pytest.raises(ValueError, match="needs config.randaugment"):
        progressive.stages_of(cfg, 6, final_dropout=0.2)
    with pytest.raises(ValueError, match="initial_dropout"):
        progressive.stages_of(config(stages=2, initial_dropout=0.1), 6, final_dropout=None)


@pytest.mark.slow
def test_resumed_staged_input_is_the_uninterrupted_one(data_dir):
    """Batch k depends on k only: starting mid-stage (a resumed run) yields the same batches."""
    cfg = config(stages=2, initial_image_size=32, initial_randaugment_magnitude=3.0)
    cfg.data_dir = data_dir
    stages = progressive.stages_of(cfg, 6, final_dropout=0.0)
    dataset = input_pipeline.open_dataset(cfg)
    full = list(progressive.train_batches(dataset, stages, local_batch_size=4))
    assert [stage.index for stage, _ in full] == [0, 0, 0, 1, 1, 1]
    assert [batch["image"].shape[1] for _, batch in full] == [32, 32, 32, 40, 40, 40]
    for start in (2, 4):
        resumed = list(progressive.train_batches(dataset, stages, local_batch_size=4, start_step=start))
        assert len(resumed) == 6 - start
        for (_, a), (_, b) in zip(full[start:], resumed):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])


@pytest.mark.slow
def test_two_stage_run_trains_at_two_sizes_and_evaluates_at_the_final_one(tmp_path, data_dir, caplog):
    """The runlocal digits recipe in 2 stages (32 then 40 px, weaker RandAugment and dropout first). The model
    is a test-only module (one compile of a small EfficientNet per stage costs ~40 s of CPU here)."""
    from helpers import TinyNet, final_state, read_metrics
    from train.train import train_and_evaluate

    cfg = config(stages=2, initial_image_size=32, initial_randaugment_magnitude=3.0, initial_dropout=0.0)
    cfg.data_dir, cfg.eval_every_steps = data_dir, 6
    built = []

    def factory(num_classes, dtype):
        built.append(TinyNet(num_classes=num_classes, dtype=dtype, dropout=0.2))
        return built[-1]

    caplog.set_level(logging.INFO)
    result = train_and_evaluate(cfg, tmp_path, model_factory=factory)
    train = [r for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert [(r["step"], r["stage"], r["image_size"]) for r in train] == [(2, 0, 32), (4, 1, 40), (6, 1, 40)]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert result["examples"] == 360 and 0.0 <= result["accuracy"] <= 1.0  # evaluated at config.image_size
    assert "stage 1/2, steps 0-2: 32 px, RandAugment magnitude 3, mixup alpha 0, dropout 0" in caplog.text
    assert "stage 2/2, steps 3-5: 40 px, RandAugment magnitude 9, mixup alpha 0, dropout 0.2" in caplog.text
    assert final_state(tmp_path)[0] == 6
