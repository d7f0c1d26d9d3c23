"""The size of MAX's device-graph memory pool that mxwr asks for (runtime/mxwr/gpu_memory.py)."""

from __future__ import annotations

from mxwr import gpu_memory

GiB = 1 << 30


def manifest(batch: int, targets=("cpu", "cuda:sm_90a")) -> dict:
    return {"dims": {"n_audio_head": 20, "n_audio_ctx": 1500}, "shape": {"batch": batch},
            "targets": [{"name": n, "weights_section": f"weights.{n}"} for n in targets]}


def lengths(name: str) -> int:
    return {"weights.cuda:sm_90a": 3 * GiB, "weights.cpu": 6 * GiB}.get(name, 0)


def test_needs_grow_with_weights_and_batch_and_ignore_cpu_targets():
    one, sixteen = (gpu_memory.bundle_needs(manifest(b), lengths) for b in (1, 16))
    assert 6 * GiB < one < sixteen  # the GPU weights twice over, not the CPU target's
    scores = 20 * 1500 * 1536 * 10 * 2  # per window
    assert sixteen - one == 15 * scores
    assert gpu_memory.bundle_needs(manifest(1, ("cpu",)), lengths) == gpu_memory.FLOOR


def test_reserve_sets_a_percentage_unless_already_set(monkeypatch):
    monkeypatch.delenv(gpu_memory.VARIABLE, raising=False)
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: 80 * GiB)
    gpu_memory.reserve_for(manifest(1), lengths)
    need = gpu_memory.bundle_needs(manifest(1), lengths)
    assert int(gpu_memory.os.environ[gpu_memory.VARIABLE]) == -(-100 * need // (80 * GiB))

    monkeypatch.setenv(gpu_memory.VARIABLE, "42")  # the user's choice stands
    gpu_memory.reserve_for(manifest(16), lengths)
    assert gpu_memory.os.environ[gpu_memory.VARIABLE] == "42"


def test_no_gpu_or_cpu_only_bundle_leaves_max_alone(monkeypatch):
    monkeypatch.delenv(gpu_memory.VARIABLE, raising=False)
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: None)
    gpu_memory.reserve_for(manifest(1), lengths)
    monkeypatch.setattr(gpu_memory, "cuda_total_memory", lambda index=0: 80 * GiB)
    gpu_memory.reserve_for(manifest(1, ("cpu",)), lengths)
    assert gpu_memory.VARIABLE not in gpu_memory.os.environ
