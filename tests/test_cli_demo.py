"""The command line: `ldmfilter demo --quick` end to end, `info`, and errors."""

import subprocess
import sys

import ldmfilter
from ldmfilter.cli import main
from ldmfilter.simulate import make_dotmotion


def test_demo_quick_end_to_end(tmp_path, capsys):
    assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for method in ("LDMFilter", "raw-frame regression", "PCA + Kalman filter (EM)"):
        assert method in out
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert written == ["forecast.png", "frames.png", "positions.png", "report.md"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| LDMFilter |" in report and "learned per-frame noise R_t" in report
    for figure in ("positions.png", "forecast.png", "frames.png"):
        assert f"![{figure}]({figure})" in report


def test_info_describes_a_saved_model(tmp_path, capsys):
    data = make_dotmotion("figure8", 8, T=12)
    path = ldmfilter.LDMFilter(max_epochs=1, verbose=False).fit(data.frames).save(tmp_path / "m.ldm")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "observation shape: (10, 10)" in out and "state_dim: 10" in out


def test_info_on_a_bad_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.ldm"
    bad.write_text("not a model")
    assert main(["info", str(bad)]) == 2
    assert "not a readable ldmfilter model file" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "ldmfilter.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "info" in out.stdout
