import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_IMAGES = ROOT / "data" / "images"

os.environ.setdefault("CNNVIS_NO_PROGRESS", "1")
os.environ["CNNVIS_PLAN_HISTORY"] = "off"  # no test reads or writes the user's plan history (test_plan_history sets its own)
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tmp_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; downloads disabled."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    monkeypatch.delenv("CNNVIS_WEIGHTS_DIR", raising=False)
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return home / "hub" / "checkpoints"


@pytest.fixture
def one_thread():
    """torch on one thread for the test (timings aside, results of some kernels depend on the
    thread count); the count before is restored afterwards, also when the test changed it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lite0():
    from generator.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture
def two_images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ["tabby-cat-chelsea.jpg", "espresso.jpg"]:
        shutil.copy(DATA_IMAGES / name, d / name)
    return d
