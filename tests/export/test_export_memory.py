"""Export memory is bounded by design: fp16 AutoCast's reference run, the calibration feeds
and the parity gate take their frames one at a time, so memory does not grow with the
number of frames (issue 22, class 6). Measured with tracemalloc (every numpy array the
steps allocate is traced), at the small preset and 48x64 frames."""

from __future__ import annotations

import tracemalloc
import weakref

import numpy as np
import onnx
import pytest
import torch

from export.clips import synthetic_clip
from export.graphs import export_mask_autoencoder
from export.options import DEFAULT_OPSET, TraceShape
from export.parity import pipeline_agreement
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from stmae.config import preset
from stmae.network import STMAE
from stmae.reference_weights import reference_weights_for

pytest.importorskip("modelopt.onnx.autocast", reason="the fp16 export needs NVIDIA ModelOpt (the export extra)")


@pytest.fixture(scope="module")
def small_model() -> STMAE:
    model = STMAE(preset("small"))
    model.load_state_dict(reference_weights_for(model))
    return model.eval()


@pytest.fixture(scope="module")
def mask_graph(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "mask_autoencoder.onnx"
    onnx.save_model(export_mask_autoencoder(small_model, DEFAULT_OPSET, TraceShape()), str(path))
    return path


def _mask_feeds(model: STMAE, count: int, scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    """``count`` mask-autoencoder feeds of 48x64 frames (image scaled by ``scale``)."""
    gen = torch.Generator().manual_seed(count)
    feeds = []
    with torch.inference_mode():
        for _ in range(count):
            image = torch.randn(1, 3, 48, 64, generator=gen) * scale
            f16, f8, f4 = model.encode_key(image)
            coarse = torch.rand(1, 2, *f16.shape[-2:], generator=gen)
            feeds.append({k: v.numpy().copy() for k, v in
                          dict(image=image, f16=f16, f8=f8, f4=f4, coarse=coarse).items()})
    return feeds


def _traced_peak(fn, *args) -> tuple[int, object]:
    """Peak bytes traced while ``fn(*args)`` ran (allocations made before are not counted)."""
    tracemalloc.start()
    try:
        result = fn(*args)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_fp16_autocast_memory_does_not_grow_with_the_calibration_feeds(small_model, mask_graph, tmp_path):
    """ModelOpt's own reference run keeps every tensor of every feed (measured here: 55 MB
    traced for 3 feeds, 162 MB for 24); the streamed run keeps per-tensor minima/maxima."""
    from export.precision import convert_fp16

    peaks = {}
    for count in (3, 24):
        feeds = _mask_feeds(small_model, count)
        peaks[count], details = _traced_peak(convert_fp16, mask_graph, tmp_path / f"fp16_{count}.onnx", feeds)
        del feeds
    assert peaks[24] < 1.2 * peaks[3], f"traced peak {peaks[3] / 1e6:.1f} MB (3 feeds) -> {peaks[24] / 1e6:.1f} MB (24)"
    assert details["calibration_feeds"] == 24


def test_streamed_reference_statistics_are_modelopts(small_model, mask_graph, tmp_path):
    """Same tensors, same ranges as ModelOpt's ReferenceRunner over the same feeds (inputs
    scaled so that some tensors exceed AutoCast's fp16 data_max of 512 and its range rule
    keeps nodes float32), and the same converted graph, byte for byte."""
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.autocast.referencerunner import ReferenceRunner

    from export.autocast_reference import streamed_reference_run, tensor_stats
    from export.feeds import FeedSpool

    spool = FeedSpool(tmp_path / "feeds")
    for feed in _mask_feeds(small_model, 3, scale=300.0):
        spool.append(feed)
    model = onnx.load(str(mask_graph))
    theirs = ReferenceRunner(model).run(str(spool.folder))
    ours = tensor_stats(model, spool)
    assert set(ours) == set(theirs)
    for name, stat in theirs.items():
        got = ours[name]
        assert got.shape == tuple(stat.shape), name
        np.testing.assert_allclose([got.absmax, got.min_val, got.max_val], [stat.absmax, stat.min_val, stat.max_val],
                                   rtol=0, atol=1e-6 * max(float(stat.absmax), 1.0), err_msg=name)
    assert max(s.absmax for s in ours.values()) > 512  # AutoCast's range rule has work to do

    kwargs = dict(onnx_path=str(mask_graph), low_precision_type="fp16", keep_io_types=True, providers=["cpu"])
    reference = convert_to_mixed_precision(calibration_data=str(spool.folder), **kwargs)
    with streamed_reference_run(spool):
        streamed = convert_to_mixed_precision(calibration_data=None, **kwargs)
    assert streamed.SerializeToString() == reference.SerializeToString()


def test_streamed_reference_run_refuses_a_conversion_that_skips_it(mask_graph):
    from modelopt.onnx.autocast import convert_to_mixed_precision

    from export.autocast_reference import streamed_reference_run

    with pytest.raises(RuntimeError, match="did not run its reference run"):
        with streamed_reference_run([]):
            convert_to_mixed_precision(onnx_path=str(mask_graph), data_max=np.inf, providers=["cpu"])


def test_calibration_feeds_are_spooled_as_recorded_and_read_back_one_at_a_time(small_model, tmp_path):
    from export.clips import record_graph_inputs
    from export.feeds import FeedReader

    config = SessionConfig(size=-1, mem_every=1)
    peaks = {}
    for frames in (3, 24):
        clip = synthetic_clip(frames, 48, 64, seed=0)
        peaks[frames], (keys, masks) = _traced_peak(record_graph_inputs, small_model, clip, config, tmp_path / str(frames))
        assert (len(keys), len(masks)) == (frames, frames - 1)
    assert peaks[24] < 1.2 * peaks[3], f"traced peak {peaks[3] / 1e6:.2f} MB (3 frames) -> {peaks[24] / 1e6:.2f} MB (24)"

    reader = FeedReader(masks)
    assert set(reader.get_first()) == {"image", "f16", "f8", "f4", "coarse"}
    alive, count = [], 0
    while (feed := reader.get_next()) is not None:
        alive.append(weakref.ref(feed["f4"]))
        del feed
        count += 1
        assert sum(ref() is not None for ref in alive) == 0  # the reader keeps none it gave out
    assert count == len(masks) == 23
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["f16"], masks[0]["f16"])


class _Logged:
    """A backend that logs its key-encoder calls (name, frame) into a shared list."""

    def __init__(self, inner: TorchBackend, name: str, log: list) -> None:
        self.inner, self.log, self.label = inner, log, name
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def encode_key(self, image):
        self.log.append(self.label)
        return self.inner.encode_key(image)

    def segment(self, image, features, coarse):
        return self.inner.segment(image, features, coarse)


def test_gate_runs_the_two_pipelines_in_step(small_model):
    """The gate compares the pipelines frame by frame: neither runs more than one frame
    ahead of the other, so no clip's worth of outputs is held (it was: the reference ran
    the whole clip first)."""
    log: list[str] = []
    clip = synthetic_clip(6, 48, 64, seed=3)
    torch_backend = TorchBackend(small_model, "cpu", "fp32")
    agreement = pipeline_agreement(_Logged(torch_backend, "ref", log), _Logged(torch_backend, "cand", log), clip,
                                   SessionConfig(size=-1))
    assert agreement.mean_iou == 1.0 and agreement.jf_reference == agreement.jf_candidate
    lead = np.cumsum([1 if who == "ref" else -1 for who in log])
    assert log.count("ref") == log.count("cand") == 6 and np.abs(lead).max() <= 1, log


def test_topk_sensitivity_takes_its_frames_one_at_a_time():
    from export.parity import topk_sensitivity

    rng = np.random.default_rng(0)
    alive: list[weakref.ref] = []

    def pairs():
        for _ in range(8):
            ref = rng.standard_normal((1, 16, 4, 6)).astype(np.float32)
            cand = ref + 1e-3 * rng.standard_normal(ref.shape).astype(np.float32)
            alive.append(weakref.ref(ref))
            # the memory frame and the query just measured may be alive; no more
            assert sum(r() is not None for r in alive) <= 3
            yield ref, cand

    result = topk_sensitivity(pairs(), top_k=5)
    assert len(alive) == 8 and 0 <= result["topk_sets_changed"] <= 1 and result["readout_rel_error"] < 0.1
