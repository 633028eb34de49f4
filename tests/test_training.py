"""The training bookkeeping every method shares (pipelines.training.StageRun): no checkpoint of
non-finite weights, resumes on another machine recorded, deterministic GPU kernels chosen."""
from __future__ import annotations

import pytest
import torch

from pipelines.training import RESUMED_ELSEWHERE_NOTE, StageRun, load_checkpoint


def _run(tmp_path, every_steps: int = 1) -> StageRun:
    return StageRun(tmp_path / "stage.pt", "lgn_net", "train", {"image_size": 8}, {"lr": 1.0}, seed=0,
                    every_steps=every_steps)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


@pytest.mark.parametrize("where", ["periodic", "final"])
def test_non_finite_weights_leave_no_checkpoint(tmp_path, where):
    """The loss is checked before each step; a step can still diverge after it (the last one, or
    the one a periodic checkpoint follows): the checkpoint is refused, not written."""
    run, model = _run(tmp_path, every_steps=1 if where == "periodic" else 0), _model()
    with torch.no_grad():
        model[0].weight[0, 1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"lgn_net stage 'train', step \d: non-finite weights in 0\.weight"):
        run.advance(model, {}) if where == "periodic" else run.finish(model, {})
    assert not run.out.exists() and not list(run.resume_dir.glob("*.pt"))


def test_a_resume_on_another_host_is_said_and_kept_in_the_notes(tmp_path, capsys):
    run, model = _run(tmp_path), _model()
    run.advance(model, {})
    point = run.resume_dir / "step_1.pt"
    torch.save(torch.load(point, weights_only=True) | {"torch_threads": 64}, point)  # as if made with 64 threads
    again = _run(tmp_path)
    assert again.resume(_model(), {}) == 1
    assert "torch_threads': 64" in capsys.readouterr().out
    [entry] = again.notes[RESUMED_ELSEWHERE_NOTE]
    assert entry["step"] == 1 and entry["made_on"]["torch_threads"] == 64
    assert entry["resumed_on"]["torch_threads"] == torch.get_num_threads()
    again.finish(model, {})
    assert load_checkpoint(again.out, "lgn_net")["notes"][RESUMED_ELSEWHERE_NOTE] == [entry]


def test_a_resume_on_the_same_host_adds_no_note(tmp_path):
    run, model = _run(tmp_path), _model()
    run.advance(model, {})
    again = _run(tmp_path)
    assert again.resume(_model(), {}) == 1 and RESUMED_ELSEWHERE_NOTE not in again.notes


def test_training_chooses_deterministic_gpu_kernels(tmp_path):
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        _run(tmp_path)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_a_resume_point_made_under_another_runtime_value_is_resumed(tmp_path):
    """The resume-point interval is a runtime key (it passes to the job outside its params): a
    requeued job whose interval was changed meanwhile continues from its point; any other config
    change still starts the stage over."""
    def run(every, lr=1.0):
        return StageRun(tmp_path / "stage.pt", "lgn_net", "train", {}, {"lr": lr, "checkpoint_every": every}, seed=0,
                        every_steps=every, runtime_keys=("checkpoint_every",))

    run(1).advance(_model(), {})
    assert run(5).resume(_model(), {}) == 1
    assert run(5, lr=2.0).resume(_model(), {}) == 0


def test_a_gpu_the_job_was_given_but_torch_cannot_use_is_said(monkeypatch, capsys):
    from pipelines import training

    if torch.cuda.is_available():
        pytest.skip("torch can use this machine's GPU")
    training._warn_of_an_unusable_gpu.cache_clear()
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert training.torch_device() == "cpu" and capsys.readouterr().err == ""
    training._warn_of_an_unusable_gpu.cache_clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert training.torch_device() == "cpu" and training.torch_device() == "cpu"
    err = capsys.readouterr().err
    assert err.count("WARNING: this job was given a GPU (CUDA_VISIBLE_DEVICES=0) but torch") == 1, err
    training._warn_of_an_unusable_gpu.cache_clear()


def test_a_final_checkpoints_bytes_do_not_depend_on_a_runtime_key(tmp_path):
    """The scores record the checkpoint's digest: two runs that differ only in their resume-point
    interval must write the same bytes."""
    def finished(every, folder):
        run = StageRun(tmp_path / folder / "stage.pt", "lgn_net", "train", {}, {"lr": 1.0, "checkpoint_every": every},
                       seed=0, every_steps=every, runtime_keys=("checkpoint_every",))
        run.finish(_model(), {})
        return run.out.read_bytes()

    assert finished(2, "a") == finished(3, "b")
