"""The one experiment pipeline behind run, bench and score: configuration rules and equal results."""
import pytest

from anomalykit import ConfigError
from anomalykit import bench as B
from anomalykit.pipeline import RunConfig, run_experiment


def test_command_line_beats_config_file_beats_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(RunConfig(method="ama", data="wine", max_train=50, params={"epochs": 3, "lr": 0.1}).to_toml())
    cfg = RunConfig.resolve(config_file=path, fields={"max_train": 20, "protocol": None}, params={"epochs": 5, "seed": None})
    assert (cfg.method, cfg.data, cfg.max_train, cfg.protocol) == ("ama", "wine", 20, "one-class")
    assert cfg.params == {"epochs": 5, "lr": 0.1}
    with pytest.raises(ConfigError, match="disagrees with"):
        RunConfig.resolve(method="adgan", config_file=path)
    with pytest.raises(ConfigError, match="missing METHOD"):
        RunConfig.resolve()
    with pytest.raises(ConfigError, match="checkpoint-every must be >= 0"):
        RunConfig.resolve(method="ama", fields={"checkpoint_every": -1})


def test_resume_keeps_the_run_and_allows_only_epochs_device_checkpointing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(RunConfig(method="ama", normal_class=3, params={"epochs": 2}).to_toml())
    cfg = RunConfig.resolve(resume=run, fields={"checkpoint_every": 7}, params={"epochs": 4, "device": "cpu"})
    assert (cfg.normal_class, cfg.checkpoint_every, cfg.params) == (3, 7, {"epochs": 4, "device": "cpu"})
    with pytest.raises(ConfigError, match="drop --normal-class, --seed"):
        RunConfig.resolve(resume=run, fields={"normal_class": 1}, params={"seed": 2})
    with pytest.raises(ConfigError, match="drop --METHOD"):
        RunConfig.resolve(method="adgan", resume=run)


def test_run_and_bench_give_the_same_numbers_for_the_same_cell(pca_method, tmp_path):
    record = run_experiment(RunConfig(method="pca-recon", data="digits", normal_class=2, params={"n_components": 4}),
                            out=tmp_path / "run", progress=False, echo=lambda *_: None)
    cfg = B.BenchConfig(protocol="one-class", data="digits", classes="2", methods="pca-recon", budget="default",
                        set=("pca-recon.n_components=4",))
    row = B.run_cell(B.Cell("pca-recon", "method", 2, 0), cfg, {})
    assert row["split_fingerprint"] == record["split_fingerprint"]
    assert row["auroc"] == record["auroc"] and row["f1"] == record["f1"]
