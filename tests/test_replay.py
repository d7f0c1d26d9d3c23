"""Device-graph replay, exercised on the CPU.

GPU targets run their graphs as recordings replayed through fixed buffers (runtime/mxwr/replay.py).
`replay="emulate"` keeps every copy and identity rule of that path while executing on the CPU:
its results must equal plain execution's exactly, and its bookkeeping must refuse misuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from support import DEV, short_clips
from mxwr.audio import load_audio
from mxwr.decoding import DecodingOptions, DecodingTask
from mxwr.errors import MxwError
from mxwr.replay import Const, Fixed, ReplayedGraph
from mxwr.transcribe import Transcriber

LONG = DEV / "long_osr_us_000_0034_8k.wav"


def test_replayed_decode_equals_plain_execution(tiny_bundle):
    audios = [load_audio(c) for c in short_clips()]
    plain = Transcriber(tiny_bundle, device="cpu", replay="off", mel_on_device=True)
    replayed = Transcriber(tiny_bundle, device="cpu", replay="emulate", mel_on_device=True)
    expected = list(plain.decode_windows(audios))
    assert list(replayed.decode_windows(audios)) == expected
    # One recording per graph serves every window and every position; the step has two that
    # take turns (one runs while the other's token is read).
    assert {role: len(g.recordings) for role, g in replayed.model._replayed.items()} == {
        "frontend": 1, "encoder": 1, "prefill": 1, "step": 2}


def test_replayed_transcribe_equals_plain_execution(tiny_bundle, tiny_beams_bundle):
    """Host-side logit rules (timestamps), seeking past the first window, and beam search's cache reorder."""
    for bundle, options in ((tiny_bundle, {}), (tiny_beams_bundle, {"beam_size": 5})):
        plain = Transcriber(bundle, device="cpu", replay="off").transcribe(LONG, **options)
        replayed = Transcriber(bundle, device="cpu", replay="emulate").transcribe(LONG, **options)
        assert replayed["segments"] == plain["segments"]


def test_a_context_is_not_used_after_the_next_encode(tiny_bundle):
    t = Transcriber(tiny_bundle, device="cpu", replay="emulate")
    mel = np.zeros((1, 80, 3000), np.float32)
    first = t.model.encode(mel)
    t.model.encode(mel)  # overwrites the recording's outputs, which `first` views
    task = DecodingTask(t.model, t.special, DecodingOptions(without_timestamps=True))
    with pytest.raises(MxwError, match="used after the next encode"):
        task.run(first)


def test_unknown_replay_mode(tiny_bundle):
    with pytest.raises(MxwError, match="unknown replay mode"):
        Transcriber(tiny_bundle, device="cpu", replay="sometimes")


class _Doubling:
    """An engine model stand-in: output = 2 * input 0 + input 1, counting its runs."""

    def __init__(self):
        self.runs = 0

    def execute(self, a, b):
        from max.driver import Buffer

        self.runs += 1
        return [Buffer.from_numpy(2 * a.to_numpy() + b.to_numpy())]


_KEEP: list[np.ndarray] = []  # the arrays the test buffers view


def _buffer(values):
    from max.driver import Buffer

    _KEEP.append(np.array(values, np.float32))
    return Buffer.from_numpy(_KEEP[-1])


def test_recording_inputs_follow_their_rules():
    from max.driver import CPU

    engine = _Doubling()
    graph = ReplayedGraph("toy", engine, CPU(), emulate=True)
    fixed, const = _buffer([1, 1]), _buffer([10, 20])
    (out,) = graph("k", [Fixed(fixed), Const(const)])
    np.testing.assert_array_equal(out.to_numpy(), [12, 22])

    # A Fixed buffer is read where it is: changing its contents changes the next run.
    np.copyto(fixed.to_numpy(), [3, 3])
    (again,) = graph("k", [Fixed(fixed), Const(const)])
    assert again is out  # the recording's own output buffer, overwritten
    np.testing.assert_array_equal(out.to_numpy(), [16, 26])

    # Another Const is copied in; a numpy input is copied on every run.
    graph("k", [Fixed(fixed), Const(_buffer([0, 1]))])
    np.testing.assert_array_equal(out.to_numpy(), [6, 7])
    graph.recordings.clear()
    graph("n", [np.array([1, 2], np.float32), np.array([0, 0], np.float32)])
    (out,) = graph("n", [np.array([5, 6], np.float32), np.array([1, 1], np.float32)])
    np.testing.assert_array_equal(out.to_numpy(), [11, 13])

    # The recording keeps the buffer it was made with: another in its place is refused.
    graph("f", [Fixed(fixed), Const(const)])
    with pytest.raises(MxwError, match="recorded with another buffer"):
        graph("f", [Fixed(_buffer([1, 1])), Const(const)])


def test_a_fetch_reads_its_staging_only_after_its_event():
    """GPU reads go to pinned staging buffers and wait on an event recorded after the copy
    (model.fetch); the host must not read the staging memory before the event completes."""
    from mxwr.model import Fetch

    log = []

    class Event:
        def synchronize(self):
            log.append("synchronize")

    class Staging:
        def __init__(self, values):
            self.values = np.array(values)

        def to_numpy(self):
            log.append("read")
            return self.values

    staging = [Staging([7]), Staging([-0.5])]
    fetched = Fetch(staging=staging, event=Event())
    assert log == []  # nothing waits until the result is wanted
    token, logprob = fetched.result()
    assert log == ["synchronize", "read", "read"]
    staging[0].values[0] = 9  # the staging buffer is reused by a later read: results are copies
    assert fetched.result()[0].tolist() == [7] and token.tolist() == [7]
    assert Fetch(arrays=[np.array([3])]).result()[0].tolist() == [3]
