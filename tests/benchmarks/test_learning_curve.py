"""benchmarks/learning_curve.py: resumed logs de-duplicated, J&F read from stmae-eval output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_curve.py"
spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
learning_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curve)


def _log(path: Path, rows: list[tuple[int, float]]) -> None:
    path.write_text("step,epoch,loss,lr\n" + "".join(f"{s},0,{loss},0.001\n" for s, loss in rows))


def test_a_resumed_log_keeps_the_last_row_of_each_step(tmp_path):
    # steps 10-30, the process dies, and the resume re-logs 20 and 30 from its checkpoint
    _log(tmp_path / "log.csv", [(10, 1.0), (20, 0.9), (30, 0.8), (20, 0.7), (30, 0.6), (40, 0.5)])
    log = learning_curve.read_log(tmp_path / "log.csv")
    assert list(log) == [10, 20, 30, 40]
    assert [v[0] for v in log.values()] == [1.0, 0.7, 0.6, 0.5]


def test_plots_mean_jf_of_eval_folders(tmp_path, capsys):
    _log(tmp_path / "log.csv", [(s, 1.0 / s) for s in range(10, 200, 10)])
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "results.csv").write_text("sequence,J,F,J&F\na,0.5,0.5,0.5\nb,0.2,0.2,0.2\n")
    out = tmp_path / "curve.png"
    assert learning_curve.main(["--log", str(tmp_path / "log.csv"), "--eval", f"100={ev}",
                                "--baseline", "copy=0.2", "--out", str(out)]) == 0
    assert "step    100  held-out J&F 0.3500" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert learning_curve.main(["--log", str(tmp_path / "log.csv"), "--eval", f"5={tmp_path / 'none'}",
                                "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_smooth_is_a_trailing_mean():
    assert learning_curve.smooth([1, 2, 3, 4], 2) == pytest.approx([1, 1.5, 2.5, 3.5])
