"""Progress lines for logs: counts and elapsed time when stdout is not a terminal."""
import re

from generator import progress
from generator.util import progress as util_progress


def test_lines_when_stdout_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("CNNVIS_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CNNVIS_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "EVERY", 0.0)  # a line on every update
    bar = util_progress(total=3, desc="activity efficientnet_lite0", unit="img")
    assert isinstance(bar, progress.LineBar)  # pytest's captured stdout is not a terminal
    bar.update(2)
    bar.update(1)
    bar.close()
    bar.close()  # once only
    for _ in util_progress(["a", "b"], desc="deconv neurons m", unit="layer"):
        pass
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "activity efficientnet_lite0: 0/3 img …"
    assert re.fullmatch(r"activity efficientnet_lite0: 2/3 img, \d+ s", out[1])
    assert sum(bool(re.fullmatch(r"activity efficientnet_lite0: 3/3 img in \d+\.\d s", o)) for o in out) == 1
    assert out[-1].startswith("deconv neurons m: 2/2 layer in ")


def test_silenced(monkeypatch, capsys):
    monkeypatch.setenv("CNNVIS_NO_PROGRESS", "1")
    progress.line("stage 1/2 overview: start")
    bar = util_progress(total=2, desc="x")
    bar.update(2)
    bar.close()
    assert capsys.readouterr().out == ""
