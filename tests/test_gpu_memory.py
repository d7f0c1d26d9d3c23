"""The size of MAX's device-graph memory pool that mxwr asks for (runtime/mxwr/gpu_memory.py)."""

from __future__ import annotations

from types import SimpleNamespace

from mxwr import gpu_memory

GiB = 1 << 30


def manifest(batch: int, targets=("cpu", "cuda:sm_90a")) -> SimpleNamespace:
    """What `bundle_needs` reads of a `Manifest`: dims, batch, targets, section lengths."""
    lengths = {"weights.cuda:sm_90a": 3 * GiB, "weights.cpu": 6 * GiB}
    return SimpleNamespace(
        dims=SimpleNamespace(n_audio_head=20, n_audio_ctx=1500), shape=SimpleNamespace(batch=batch),
        targets=[SimpleNamespace(name=n, weights_section=f"weights.{n}", is_gpu=n != "cpu") for n in targets],
        section=lambda name: SimpleNamespace(length=lengths.get(name, 0)))


def test_needs_grow_with_weights_and_batch_and_ignore_cpu_targets():
    one, sixteen = (gpu_memory.bundle_needs(manifest(b)) for b in (1, 16))
    assert 6 * GiB < one < sixteen  # the GPU weights twice over, not the CPU target's
    scores = 20 * 1500 * 1536 * 10 * 2  # per window
    assert sixteen - one == 15 * scores
    assert gpu_memory.bundle_needs(manifest(1, ("cpu",))) == gpu_memory.FLOOR


def test_reserve_sets_a_percentage_unless_already_set(monkeypatch):
    monkeypatch.delenv(gpu_memory.VARIABLE, raising=False)
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: 80 * GiB)
    gpu_memory.reserve_for(manifest(1))
    need = gpu_memory.bundle_needs(manifest(1))
    assert int(gpu_memory.os.environ[gpu_memory.VARIABLE]) == -(-100 * need // (80 * GiB))

    monkeypatch.setenv(gpu_memory.VARIABLE, "42")  # the user's choice stands
    gpu_memory.reserve_for(manifest(16))
    assert gpu_memory.os.environ[gpu_memory.VARIABLE] == "42"


def test_no_gpu_or_cpu_only_bundle_leaves_max_alone(monkeypatch):
    monkeypatch.delenv(gpu_memory.VARIABLE, raising=False)
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: None)
    gpu_memory.reserve_for(manifest(1))
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: 80 * GiB)
    gpu_memory.reserve_for(manifest(1, ("cpu",)))
    assert gpu_memory.VARIABLE not in gpu_memory.os.environ
