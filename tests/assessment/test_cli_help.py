"""--help of the console script and of the inference tools: fast (standard library only) and lists exit codes."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("torch", "detectron2", "cardd_d2", "numpy")


@pytest.mark.parametrize("sub", [[], ["assess"], ["serve"], ["export"]])
def test_cardd_help_imports_nothing_heavy(sub):
    code = ("import sys, cardd_cli\n"
            "try:\n    cardd_cli.main(%r + ['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HEAVY', [m for m in %r if m in sys.modules])\n" % (sub, HEAVY))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "exit status:" in out.stdout and "2  usage error" in out.stdout
    if sub not in (["serve"], ["export"]):
        assert "1  some inputs failed" in out.stdout


@pytest.mark.parametrize("tool", ["demo.py", "challenging_setting.py", "train_classifier.py", "assess.py"])
def test_tools_help_lists_exit_codes(tool):
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "exit status:" in out.stdout and "2  usage error" in out.stdout


def test_overrides_are_told_apart_from_inputs(tmp_path, monkeypatch):
    from cardd_cli import UsageError, main, split_config_overrides

    monkeypatch.chdir(tmp_path)
    (tmp_path / "IMG.JPG").write_bytes(b"x")  # an existing file spelled like a key stays an input
    assert split_config_overrides(["a.jpg", "IMG.JPG", "MODEL.WEIGHTS", "m.pth", "b/"]) == (
        ["a.jpg", "IMG.JPG", "b/"], ["MODEL.WEIGHTS", "m.pth"])
    with pytest.raises(UsageError, match="MODEL.DEVICE has no value"):
        split_config_overrides(["a.jpg", "MODEL.DEVICE"])
    with pytest.raises(SystemExit) as e:  # usage errors exit with 2 before anything is loaded
        main(["assess", "--config-file", "c.yaml", "--output", "o", "a.jpg", "MODEL.DEVICE"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["assess", "--config-file", "c.yaml", "--output", "o", "a.jpg", "--class-names", "a,,b"])
    assert e.value.code == 2


def test_predictor_metadata_has_the_checkpoints_names(tiny_config_file, save_tiny_weights):
    from assessment_helpers import PARTS

    from cardd_d2.assessment.predictor import build_predictor, setup_cfg

    predictor = build_predictor(setup_cfg(tiny_config_file, weights=save_tiny_weights(PARTS, "parts.pth")))
    assert predictor.metadata.thing_classes == PARTS and not predictor.metadata.get("thing_colors")
