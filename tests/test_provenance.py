"""The code revision every output records."""
from __future__ import annotations

import re
import subprocess


def test_the_code_revision_marks_changed_and_new_untracked_code(tmp_path):
    """A row made by code that differs from its commit says so: a changed tracked file, or a new
    file in the code folders (a method being added) that git does not track yet."""
    from pipelines.provenance import source_revision

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert source_revision(tmp_path) == "unknown"
    git("init", "-q")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tde.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("results/\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = source_revision(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "scores.h5").write_text("output")  # ignored: not code
    (tmp_path / "notes.txt").write_text("not in a code folder")
    assert source_revision(tmp_path) == clean
    (tmp_path / "models" / "new_method.py").write_text("y = 2\n")
    assert source_revision(tmp_path) == clean + "+changes"
    (tmp_path / "models" / "new_method.py").unlink()
    (tmp_path / "models" / "tde.py").write_text("x = 2\n")
    assert source_revision(tmp_path) == clean + "+changes"
