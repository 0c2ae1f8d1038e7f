from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Config, load_config


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic cases, one per vendor style (cases cycle Siemens, GE, Philips)."""
    from training.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, cases=3, seed=11, progress=False)
    return out
