"""The edge runtime needs neither torch nor openai-whisper (nor the serve extra's packages)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import DECODE_ARGS, DEV, assert_one_line_error, reference_tokens, run_cli

JFK = DEV / "jfk_inaugural.wav"


SERVER_MODULES = ("starlette", "uvicorn", "multipart", "python_multipart")  # mxw[serve]'s
RAY_MODULES = ("ray", "pyarrow")  # mxw[ray]'s


def test_runtime_env_has_no_torch_or_whisper(runtime_env):
    for module in ("torch", "whisper", *SERVER_MODULES, *RAY_MODULES):
        proc = subprocess.run([str(runtime_env / "python"), "-c", f"import {module}"], capture_output=True)
        assert proc.returncode != 0, f"{module} is importable in the runtime environment"


def test_runtime_env_serve_asks_for_the_extra(runtime_env, tiny_bundle):
    """Without the serve extra, `mxwr serve` is one line naming it (the API itself works)."""
    proc = run_cli("mxwr", "serve", str(tiny_bundle), "--port", "1", python_bin=runtime_env, timeout=120)
    assert_one_line_error(proc, "serve extra", "mxw[serve]")
    code = "import mxwr, sys; mxwr.Model; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (
        SERVER_MODULES,)
    proc = subprocess.run([str(runtime_env / "python"), "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_runtime_env_cluster_asks_for_the_extra(runtime_env, tiny_bundle, tmp_path):
    """Without the ray extra, `mxwr cluster` is one line naming it, before anything runs."""
    proc = run_cli("mxwr", "cluster", str(tiny_bundle), str(JFK), "--output_dir", str(tmp_path / "out"),
                   python_bin=runtime_env, timeout=120)
    assert_one_line_error(proc, "mxw[ray]")
    assert not (tmp_path / "out").exists()


def test_runtime_env_transcribes_jfk(runtime_env, tiny_bundle, reference_model):
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--output-format", "json", *DECODE_ARGS,
                   python_bin=runtime_env, check=True)
    assert json.loads(proc.stdout)["segments"][0]["tokens"] == reference_tokens(reference_model, JFK)


def test_mxwr_never_imports_torch_or_whisper(tiny_bundle):
    """In an environment that has both, a whole transcription leaves them unimported (and
    tiktoken too: it is loaded only to encode a text prompt)."""
    code = f"""
import sys
from mxwr.cli import cli
try:
    cli(["run", {str(tiny_bundle)!r}, {str(JFK)!r}], standalone_mode=False)
finally:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "whisper", "tiktoken", "starlette", "uvicorn",
                                                                 "ray", "pyarrow"))
    print("LEAKED", leaked)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LEAKED []" in proc.stdout, proc.stdout
    assert "ask not" in proc.stdout
