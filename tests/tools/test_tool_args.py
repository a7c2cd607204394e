"""cardd_d2.tool_args: flags in any position, KEY VALUE overrides, usage errors that say where overrides go."""
import argparse

import pytest

from cardd_d2.tool_args import EXIT_STATUS_HELP, parse_args_with_overrides


def _parser():
    p = argparse.ArgumentParser(prog="tool", epilog=EXIT_STATUS_HELP)
    p.add_argument("--config-file", default="")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--num-gpus", type=int, default=1)
    p.add_argument("--input", nargs="+", default=[])
    return p


@pytest.mark.parametrize("argv", [
    ["--config-file", "a.yaml", "--resume", "SOLVER.MAX_ITER", "5", "SEED", "-1"],
    ["SOLVER.MAX_ITER", "5", "--config-file", "a.yaml", "SEED", "-1", "--resume"],
    ["--config-file", "a.yaml", "SOLVER.MAX_ITER", "5", "SEED", "-1", "--resume"],
    ["--config-file=a.yaml", "--opts", "SOLVER.MAX_ITER", "5", "SEED", "-1", "--res"],
])
def test_flags_anywhere(argv):
    args = parse_args_with_overrides(_parser(), argv)
    assert args.config_file == "a.yaml" and args.resume is True
    assert args.opts == ["SOLVER.MAX_ITER", "5", "SEED", "-1"]


def test_list_flag_stops_at_a_config_key():
    args = parse_args_with_overrides(_parser(), ["--input", "a.jpg", "b.jpg", "MODEL.WEIGHTS", "m.pth", "--num-gpus",
                                                 "2"])
    assert args.input == ["a.jpg", "b.jpg"] and args.opts == ["MODEL.WEIGHTS", "m.pth"] and args.num_gpus == 2


@pytest.mark.parametrize("argv,message", [
    (["SOLVER.MAX_ITER"], "KEY VALUE pairs"),
    (["--config-file", "a.yaml", "max_iter", "5"], "'max_iter' is not a config key"),
    (["--cfg-options", "SOLVER.MAX_ITER=5"], "unrecognized flag '--cfg-options'"),
])
def test_usage_errors_say_where_overrides_go(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args_with_overrides(_parser(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100" in err
