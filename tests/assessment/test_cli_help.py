"""--help of the console script and of the inference tools: fast (standard library only) and lists exit codes."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("torch", "detectron2", "cardd_d2", "numpy")


@pytest.mark.parametrize("sub", [[], ["assess"], ["serve"]])
def test_cardd_help_imports_nothing_heavy(sub):
    code = ("import sys, cardd_cli\n"
            "try:\n    cardd_cli.main(%r + ['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HEAVY', [m for m in %r if m in sys.modules])\n" % (sub, HEAVY))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "exit status:" in out.stdout and "2  usage error" in out.stdout
    if sub != ["serve"]:
        assert "1  some inputs failed" in out.stdout


@pytest.mark.parametrize("tool", ["demo.py", "challenging_setting.py", "train_classifier.py", "assess.py"])
def test_tools_help_lists_exit_codes(tool):
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "exit status:" in out.stdout and "2  usage error" in out.stdout
