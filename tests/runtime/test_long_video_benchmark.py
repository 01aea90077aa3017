"""benchmarks/long_video.py runs and reports a memory bank that stops growing (a short
run; the speed ratio itself is measured by running the script, not asserted here)."""

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "long_video.py"


def test_long_video_benchmark_short_run(capsys):
    spec = importlib.util.spec_from_file_location("long_video_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--frames", "201", "--height", "32", "--width", "32", "--mem-every", "2",
                 "--max-memory-frames", "3"])
    out = capsys.readouterr().out
    assert "bank size constant after the window filled: True" in out
    assert re.search(r"wall time ratio last/first: mean \d+\.\d{3}", out)
    assert re.search(r"frame   200: +\d+ B  slots   4  used   4  working   3", out)
    assert "peak RSS" in out
