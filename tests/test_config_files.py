"""The config files in conf/ are valid and conf/local.yaml documents every BuildConfig key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from bigearthnet.config import BuildConfig, resolve
from bigearthnet.train.config import TrainConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field, nested config models included."""
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys |= model_keys(sub, f"{prefix}{name}.")
    return keys


def documented_keys(path: Path) -> set[str]:
    """Keys set in the YAML, plus required keys shown as ``# key: ...`` comments."""
    def walk(doc: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in doc.items():
            out.add(prefix + key)
            if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
                out |= walk(value, f"{prefix}{key}.")
        return out

    text = path.read_text()
    commented = set(re.findall(r"^# (\w+):", text, flags=re.MULTILINE))
    return walk(yaml.safe_load(text)) | commented


def test_local_yaml_lists_every_build_key():
    keys = model_keys(BuildConfig)
    doc = documented_keys(CONF / "local.yaml")
    missing = sorted(k for k in keys if k not in doc and not k.startswith(("spark.extra_conf.",
                                                                           "countries.")))
    assert missing == []
    assert sorted(doc - keys) == []


def test_the_key_check_sees_a_missing_key(tmp_path):
    text = (CONF / "local.yaml").read_text().replace("  drop_no_labels: true", "")
    (tmp_path / "local.yaml").write_text(text)
    assert "quality.drop_no_labels" in model_keys(BuildConfig) - documented_keys(tmp_path / "local.yaml")


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_build_configs_resolve(name):
    cfg = resolve(BuildConfig, CONF / name, {"products": "p", "out": "o"})
    assert cfg.products == "p"


def test_local_yaml_holds_the_defaults():
    cfg = resolve(BuildConfig, CONF / "local.yaml", {"products": "p", "out": "o"})
    assert cfg == BuildConfig(products="p", out="o")


def test_paper_yaml_is_a_train_config():
    cfg = resolve(TrainConfig, CONF / "paper.yaml", {"dataset": "d", "out": "o"})
    assert cfg.epochs == 100


def test_every_command_says_what_an_interrupt_leaves():
    from bigearthnet.cli import INTERRUPTED, build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert set(INTERRUPTED) == commands
    assert "--resume" in INTERRUPTED["train"] and "no dataset" in INTERRUPTED["build"]
