"""The layers of pipelines/ hold (pyproject.toml, [tool.importlinter]; docs/architecture.md).

poisonscan installs its top-level folders (detectors/, pipelines/, expectations/) under
one import package, which import-linter cannot find on disk; the test lays the package
out in a temporary folder of links and checks the contracts there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_hold(tmp_path):
    pkg = tmp_path / "poisonscan"
    pkg.mkdir()
    shutil.copy(os.path.join(ROOT, "src", "poisonscan", "__init__.py"), pkg / "__init__.py")
    for name in ("detectors", "pipelines", "expectations"):
        os.symlink(os.path.join(ROOT, name), pkg / name)
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run(
        [lint, "--config", os.path.join(ROOT, "pyproject.toml"), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout
