"""The command-line tools answer --help and usage errors without importing torch, detectron2 or
polar_rcnn (their module-level imports are the standard library's; the rest is imported where used),
and without warnings. Checked on what is imported (``python -X importtime``), not on time."""
import os
import subprocess
import sys

import pytest

from tests.tools.tool_test_utils import TOOLS_DIR

TOOLS = ["check_dataset", "stack_stats", "split_dataset", "predict", "visualize", "plot_metrics", "tune", "benchmark",
         "estimate_homography",
         "evidence", "demo", "branch_cost", "robustness"]
HEAVY = {"torch", "detectron2", "polar_rcnn", "numpy", "cv2"}


def _run(tool, *argv):
    """(exit status, stdout, stderr without the import-time lines, top-level modules imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", os.path.join(TOOLS_DIR, f"{tool}.py"), *argv],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="100"))
    modules, stderr = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[-1].strip().split(".")[0])
        else:
            stderr.append(line)
    return done.returncode, done.stdout, "\n".join(stderr), modules


@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_usage_errors_import_only_the_standard_library(tool):
    code, out, err, modules = _run(tool, "--help")
    assert code == 0 and out.startswith("usage:"), err
    assert not modules & HEAVY, f"--help of {tool} imports {sorted(modules & HEAVY)}"
    assert "Warning" not in err and "warning" not in err, err

    code, out, err, modules = _run(tool, "--no-such-option")
    assert code == 2 and f"{tool}.py: error: " in err, err
    assert not modules & HEAVY, f"a usage error of {tool} imports {sorted(modules & HEAVY)}"


def test_names_copied_for_help_match_the_library():
    """Choices and variant names that the tools' parsers list without importing polar_rcnn."""
    from polar_rcnn.analysis import POLAR_VARIANTS, VARIANTS
    from polar_rcnn.data.splits import GROUP_MODES
    from tools import benchmark, branch_cost, split_dataset

    assert split_dataset.GROUP_MODES == GROUP_MODES
    assert benchmark.VARIANT_NAMES == tuple(VARIANTS)
    assert branch_cost.POLAR_VARIANT_NAMES == tuple(POLAR_VARIANTS)
