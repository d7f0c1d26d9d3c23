"""The slim edge install (scripts/slim_runtime.sh): small enough, and it transcribes as the full
runtime does."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import DECODE_ARGS, ROOT, reference_tokens, run_cli

JFK = ROOT / "samples" / "jfk.wav"
SIZE_BOUND_MIB = 300  # the aim for a CPU host, in du's unit (the unit of its "~800 MB")


def du_mib(root: Path) -> float:
    """Disk usage as `du -s` counts it: allocated blocks, hard links once, links not followed."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return (total + os.lstat(root).st_blocks * 512) / 2**20


@pytest.fixture(scope="module")
def slim_build(tmp_path_factory) -> tuple[Path, str]:
    """(environment, the recipe's log): a slim environment made by the supported recipe, fresh
    (about 20 s: an install from the wheel cache, then the pruning)."""
    env = tmp_path_factory.mktemp("slim") / "env"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "slim_runtime.sh"), str(env)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return env, proc.stderr


@pytest.fixture(scope="module")
def slim_env(slim_build) -> Path:
    return slim_build[0]


def site_packages(env: Path) -> Path:
    (sp,) = env.glob("lib/python3*/site-packages")
    return sp


def test_slim_env_is_within_the_size_bound(slim_build):
    env, log = slim_build
    size = du_mib(env)
    print(f"slim runtime: {size:.1f} MiB")
    # The log names the parts (and says if binutils was missing, which keeps 13 MiB of DWARF).
    assert size <= SIZE_BOUND_MIB, f"the slim runtime takes {size:.1f} MiB (bound {SIZE_BOUND_MIB}):\n{log}"


def test_slim_env_has_no_toolchain(slim_env):
    """The compiler, the linker and the GPU assembler are gone, and so are pip and torch; MAX's
    root marker is a placeholder that fails when run."""
    sp = site_packages(slim_env)
    for gone in ("modular/bin/lld", "modular/lib/mojo", "modular/lib/libNVPTX.so", "mxwc", "pip", "torch"):
        assert not (sp / gone).exists(), gone
    marker = sp / "modular" / "bin" / "mojo"
    assert marker.stat().st_size < 1024
    proc = subprocess.run([str(marker), "--version"], capture_output=True, text=True)
    assert proc.returncode == 127 and "slim" in proc.stderr


def test_slim_env_transcribes_jfk_as_openai_whisper(slim_env, tiny_bundle, reference_model):
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--output-format", "json", *DECODE_ARGS,
                   python_bin=slim_env / "bin", check=True)
    assert json.loads(proc.stdout)["segments"][0]["tokens"] == reference_tokens(reference_model, JFK)


def test_slim_env_matches_the_full_runtime(slim_env, tiny_bundle):
    """Word timestamps (the alignment graph) and a text prompt (tiktoken) too: the slim runtime's
    whole result equals the full environment's, on the same bundle."""
    args = ("run", str(tiny_bundle), str(JFK), "--output-format", "json", "--word_timestamps", "True",
            "--initial_prompt", "President Kennedy's inaugural address.")
    slim = run_cli("mxwr", *args, python_bin=slim_env / "bin", check=True)
    full = run_cli("mxwr", *args, check=True)  # the test environment's own mxwr, with everything
    result = json.loads(slim.stdout)
    assert result == json.loads(full.stdout)
    assert result["text"].strip().startswith("And so my fellow Americans")
    assert result["segments"][0]["words"], "no word timestamps"
