"""The whole DAG end to end on the synthetic demo: report, caching and reruns, lint, dry runs."""
from __future__ import annotations

import json
import os
import re
import shutil

import h5py
from PIL import Image
import pandas as pd
import pytest

from pipelines.labels import read_labels
from pipelines.provenance import config_hash
from tests.workflow_helpers import REPO, planned_jobs, run_snakemake, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    config = tiny_config()
    run_snakemake(workdir, config)
    return workdir, config


def test_demo_produces_the_report(demo):
    workdir, _ = demo
    table = pd.read_csv(workdir / "results" / "report" / "auc_table.csv")
    assert list(table.columns) == [
        "dataset", "method", "split", "auc_micro", "auc_micro_std", "auc_macro", "auc_macro_std", "ap", "ap_std", "far",
        "auc_micro_best_on_test", "paper_auc", "paper_far", "paper_ref", "protocol", "n_videos", "n_frames", "seeds", "config_hash",
    ]
    row = table.iloc[0]
    assert (row.dataset, row.method, row.split, row.n_videos) == ("synthetic", "tde", "test", 4)
    assert row.auc_micro > 55, f"baseline AUC {row.auc_micro} on the synthetic demo"
    assert "first 1 frames of each video unscored" in row.protocol
    for name in ("auc_table.md", "auc_table.html", "roc_synthetic.png", "timelines/synthetic_test_tde.png"):
        assert (workdir / "results" / "report" / name).stat().st_size > 0


def test_outputs_carry_provenance(demo):
    workdir, config = demo
    record = json.loads((workdir / "results" / "eval" / "tde" / "synthetic" / "seed_0" / "test.json").read_text())
    assert record["protocol"]["label_convention"].startswith("synthetic")
    assert record["versions"]["torch"].startswith("2.13.0") and len(record["config_hash"]) == 12
    assert re.fullmatch(r"[0-9a-f]{40}(\+changes)?", record["versions"]["vadbench_revision"])
    written = {k: v for k, v in config["datasets"]["synthetic"].items() if k != "videos_per_job"}
    assert written.items() <= record["config"]["dataset"].items() and "videos_per_job" not in record["config"]["dataset"]
    method = {k: v for k, v in config["methods"]["tde"].items() if k != "enabled"}  # enabled: every row's is true
    assert record["config"]["method"] == method and config_hash(record["config"]) == record["config_hash"]
    frames = sorted((workdir / "results" / "frames" / "synthetic" / "test").glob("*.h5"))
    with h5py.File(frames[0]) as handle:
        attrs = handle["frames"].attrs
        assert attrs["source_kind"] == "video" and len(attrs["source_sha256"]) == 64
    _, _, labels = read_labels(workdir / "results" / "labels" / "synthetic" / "test.h5")
    assert labels["n_videos"] == 4 and labels["n_abnormal_frames"] > 0
    assert labels["config"]["seed"] == config["datasets"]["synthetic"]["seed"], "a generated dataset's seed"
    assert labels["versions"]["vadbench_revision"] == record["versions"]["vadbench_revision"]
    report = workdir / "results" / "report"
    made_from = json.loads((report / "provenance.json").read_text())["evaluation_records"]
    assert [(r["file"], r["config_hash"]) for r in made_from] == \
        [("results/eval/tde/synthetic/seed_0/test.json", record["config_hash"])]
    timeline = Image.open(report / "timelines" / "synthetic_test_tde.png").text
    assert timeline["Source"].startswith(f"vadbench {record['versions']['vadbench_revision']}")
    assert timeline["Description"].startswith("tde scores of test_")


def test_second_run_does_nothing(demo):
    workdir, config = demo
    out = run_snakemake(workdir, config).stdout
    assert "Nothing to be done" in out


def test_changing_an_evaluation_parameter_reruns_only_the_evaluation(demo):
    workdir, config = demo
    changed = json.loads(json.dumps(config))
    changed["methods"]["tde"]["smoothing_sigmas"] = [2.0]
    jobs = planned_jobs(workdir, changed)
    assert set(jobs) == {"evaluate", "plot_timelines", "report_tables", "all"}, jobs


def test_changing_the_frame_storage_reruns_frames_and_what_follows(demo):
    workdir, config = demo
    changed = json.loads(json.dumps(config))
    changed["frames"]["compression"] = "gzip"
    jobs = planned_jobs(workdir, changed)
    assert "synthetic_shard" not in jobs and jobs["extract_frames"] == 2 + 4 and jobs["score_video"] == 4, jobs


def test_deleting_one_frames_file_reruns_only_that_video(demo):
    workdir, config = demo
    victim = sorted((workdir / "results" / "frames" / "synthetic" / "test").glob("*.h5"))[1]
    victim.unlink()
    jobs = planned_jobs(workdir, config)
    assert jobs["extract_frames"] == 1 and jobs["score_video"] == 1 and "synthetic_shard" not in jobs, jobs
    out = run_snakemake(workdir, config).stdout
    assert victim.is_file()
    assert "results/report/auc_table.md:\n\n| dataset" in out, "the run rewrote the table: Snakemake prints it"
    # A run that stops before the report does not show the earlier run's table as its own.
    out = run_snakemake(workdir, config, "--forcerun", str(victim.relative_to(workdir)), "--until", "extract_frames").stdout
    assert "(Rule: extract_frames)" in out
    assert "auc_table.md:" not in out
    run_snakemake(workdir, config)


def test_changing_videos_per_job_renders_the_shards_again(demo):
    workdir, config = demo
    changed = json.loads(json.dumps(config))
    changed["datasets"]["synthetic"]["videos_per_job"] = 2  # one shard per split before, now two of the 4 test videos each
    jobs = planned_jobs(workdir, changed)
    assert jobs["synthetic_shard"] == 1 + 2 and jobs["extract_frames"] == 2 + 4, jobs


def test_more_test_videos_leave_the_training_shards_be(demo):
    """A video depends on the seed, its part and its index: another test count renders test shards only."""
    workdir, config = demo
    changed = json.loads(json.dumps(config))
    changed["datasets"]["synthetic"]["n_test"] += 1
    jobs = planned_jobs(workdir, changed)
    assert jobs["synthetic_shard"] == 1 and jobs["extract_frames"] == 5, jobs  # the 2 training videos stay


def test_a_video_deleted_inside_its_rendered_shard_stops_the_dag_with_the_fix(demo):
    workdir, config = demo
    victim = sorted((workdir / "results" / "raw" / "synthetic" / "test").glob("shard_*/*.mp4"))[1]
    kept, times = victim.read_bytes(), [(p, p.stat()) for p in (victim, victim.parent)]
    victim.unlink()
    try:
        proc = run_snakemake(workdir, config, "-n", check=False)
        assert proc.returncode != 0 and f"{victim.name} is missing from its rendered shard folder" in proc.stdout
        assert f"delete {victim.parent.relative_to(workdir)} to render its videos again" in proc.stdout, proc.stdout[-3000:]
    finally:
        victim.write_bytes(kept)
        for path, stat in times:  # as rendered, so later tests see an up-to-date DAG
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_deleted_shard_folder_is_rendered_again_with_what_follows(demo, tmp_path):
    """What the message above tells the user to do: the folder is a target, so it is rendered again
    (it was an intermediate, and Snakemake said there was nothing to be done)."""
    workdir, config = demo
    shard = sorted((workdir / "results" / "raw" / "synthetic" / "test").glob("shard_*"))[0]
    kept = tmp_path / "kept_shard"
    shutil.copytree(shard, kept)
    shutil.rmtree(shard)
    try:
        jobs = planned_jobs(workdir, config)
        n_videos = len(list(kept.glob("*.mp4")))
        assert jobs["synthetic_shard"] == 1 and jobs["extract_frames"] == n_videos, jobs
        assert jobs["score_video"] == n_videos and "synthetic_splits" not in jobs, jobs
    finally:
        shutil.copytree(kept, shard)  # copy2 keeps the times: later tests see an up-to-date DAG
        shutil.copystat(kept, shard)


def test_a_rerun_from_scratch_writes_byte_identical_results(tmp_path):
    """What the README promises for regenerating a table: timings and dates go to the logs, never
    into an output, so the same commit and config write the same bytes (HDF5, JSON, CSV, plots)."""
    config = tiny_config(n_train=1, n_test=2, n_frames=32)
    run_snakemake(tmp_path, config)
    shutil.move(tmp_path / "results", tmp_path / "first")
    run_snakemake(tmp_path, config)
    first = {p.relative_to(tmp_path / "first"): p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "results"): p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file()}
    assert sorted(first) == sorted(second)
    assert any(p.suffix == ".h5" for p in first) and any(p.suffix == ".png" for p in first)
    assert [str(p) for p in first if first[p] != second[p]] == []


def test_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, tiny_config(), "--lint", check=False)
    assert proc.returncode == 0 and "Lints for" not in proc.stdout, proc.stdout[-4000:]


# Params functions that take a job's input or output and hold only its paths (with fixed flags).
PATH_ONLY_PARAMS = {"checkpoint_arg", "evaluation_args", "patch_args", "previous_arg"}


def test_params_from_input_or_output_hold_only_paths():
    """Snakemake leaves params computed from a job's input or output out of its params-changed
    trigger (they follow the input files), so a setting passed that way would change nothing on a
    rerun. Settings come from functions of the wildcards alone; these hold only paths."""
    derived, lambdas = set(), []
    for path in (REPO / "workflow").rglob("*.smk"):
        text = path.read_text()
        derived |= set(re.findall(r"^def (\w+)\(wildcards, (?:input|output)", text, re.M))
        lambdas += re.findall(r"lambda wildcards, (?:input|output)[\w, ]*: (.*)", text)
    assert derived == PATH_ONLY_PARAMS, f"review these for settings: {sorted(derived ^ PATH_ONLY_PARAMS)}"
    assert lambdas and all(body.startswith("optional_path(") for body in lambdas), lambdas


def test_snakemake_report_bundles_tables_and_plots(demo):
    workdir, config = demo
    run_snakemake(workdir, config, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "auc_table.csv" in html and "roc_synthetic.png" in html


def test_make_run_prints_no_table_after_a_dry_run(tmp_path):
    """`make run ARGS="-n"`, the README's dry run: it failed on a fresh clone (no table to print), and
    after an earlier run printed that run's table as if it were this one's."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    (tmp_path / "profiles").symlink_to(REPO / "profiles")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    table = tmp_path / "results" / "report" / "auc_table.md"

    def make_run(args):
        command = ["make", "-s", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", f"BIN={Path(sys.executable).parent}",
                   "run", f"ARGS=--snakefile {REPO / 'workflow' / 'Snakefile'} {args}"]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    fresh = make_run("-n")
    assert fresh.returncode == 0 and "This was a dry-run" in fresh.stdout + fresh.stderr, fresh.stderr[-2000:]
    table.parent.mkdir(parents=True)
    table.write_text("| an earlier run's table |\n")
    for args in ("-n", "-np", "--dry-run"):
        later = make_run(args)
        assert later.returncode == 0 and "an earlier run's table" not in later.stdout, (args, later.stdout[-2000:])
