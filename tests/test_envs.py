"""The conda environments mirror the pins of pyproject.toml, the one place they are set."""
from __future__ import annotations

import tomllib

import pytest
import yaml

from tests.conftest import REPO


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        assert version, f"pyproject.toml: {requirement} is not pinned exactly"
        pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_pyproject(env_file):
    pins = _pins()
    env = yaml.safe_load(env_file.read_text())
    pip_entries = [d for d in env["dependencies"] if isinstance(d, dict)]
    for entry in pip_entries[0]["pip"] if pip_entries else []:
        name, _, version = entry.partition("==")
        assert name.lower() in pins, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert version == pins[name.lower()], f"{env_file.name}: {name}=={version}, pyproject.toml pins {pins[name.lower()]}"


def test_every_rule_names_an_existing_env():
    for rule_file in (REPO / "workflow" / "rules").rglob("*.smk"):
        for line in rule_file.read_text().splitlines():
            if line.strip().startswith('"') and "envs/" in line:
                assert (rule_file.parent / line.strip().strip('",')).resolve().is_file(), f"{rule_file}: {line.strip()}"
