"""The CarDD on-disk layout and split names are spelled out in one module (cardd_sod/data/layout.py)."""
import os
import re

from tiny_config import REPO_ROOT

OWNER = os.path.join("cardd_sod", "data", "layout.py")
# quoted folder / file / dataset names of the release layout, and the old second copies of the split names
SPELLED_OUT = re.compile(
    r"""["']CarDD_(COCO|SOD)["']|["']cardd_(train|val|test)["']|2017\.json["']|\{split\}2017|["'](train|val|test)2017["']"""
    r"""|CARDD_SPLITS\b|CARDD_SPLIT_NAMES\b|SOD_SPLITS = \{"""
)


def test_layout_is_spelled_out_only_in_its_owner():
    offenders = []
    for top in ("cardd_d2", "cardd_sod", "projects", "tools"):
        for folder, _, files in os.walk(os.path.join(REPO_ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO_ROOT)
                if not name.endswith(".py") or rel == OWNER:
                    continue
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if SPELLED_OUT.search(line):
                            offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "use cardd_sod.data.layout instead of:\n" + "\n".join(offenders)
