"""The engine's frame decoding (runtime.engine.gpu_decode): the default decoder gives the
frames that CPU decoding gives, bit for bit, on real DAVIS JPEGs, also where nvJPEG could
run (a CUDA device); nvJPEG is opt-in and refused in one message where it cannot run."""

from __future__ import annotations

import itertools
import shutil

import cv2
import numpy as np
import pytest
import torch

import runtime.engine.gpu_decode as gpu_decode
from runtime.engine.gpu_decode import DEFAULT_DECODER, check_decoder, decode_cpu, frames_for
from runtime.errors import InputError
from runtime.io.frames import FrameFolder


def _opencv(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_default_decoder_is_cpu_and_equals_cpu_decoding_bit_for_bit(davis, tmp_path, monkeypatch):
    # Three real 480p DAVIS JPEGs (4:2:0 chroma, where nvJPEG and libjpeg differ).
    folder_dir = tmp_path / "bear"
    folder_dir.mkdir()
    for path in sorted((davis / "JPEGImages" / "480p" / "bear").glob("*.jpg"))[:3]:
        shutil.copy(path, folder_dir / path.name)
    folder = FrameFolder(folder_dir)
    # As on a GPU machine: nvJPEG would be available, and still the default decodes on the CPU.
    monkeypatch.setattr(gpu_decode, "gpu_decode_available", lambda device: True)
    assert DEFAULT_DECODER == "cpu"
    frames = frames_for(folder, "cuda")
    decoded = list(itertools.islice(iter(frames), 3))
    assert [name for name, _ in decoded] == folder.names
    for path, (_, frame) in zip(folder.paths, decoded):
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (480, 854, 3)
        assert np.array_equal(frame, decode_cpu(path))  # libjpeg through PIL (stmae-segment's frames)
        assert np.array_equal(frame, _opencv(path))  # libjpeg-turbo through OpenCV: the same pixels
        assert np.array_equal(frame, folder.read(folder.paths.index(path)))  # the pipelined loop's reads


def test_nvjpeg_is_opt_in_and_refused_where_it_cannot_run(tmp_path):
    with pytest.raises(InputError, match="unknown decoder 'libpng'"):
        check_decoder("libpng", "cpu")
    with pytest.raises(InputError, match="--decoder nvjpeg needs a CUDA device"):
        check_decoder("nvjpeg", "cpu")
    assert check_decoder("cpu", "cpu") == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA GPU (none here)")
def test_nvjpeg_on_cuda_frames_are_device_tensors_in_order(davis):
    folder = FrameFolder(davis / "JPEGImages" / "480p" / "bear")
    frames = list(itertools.islice(iter(frames_for(folder, "cuda", batch=4, decoder="nvjpeg")), 6))
    assert [name for name, _ in frames] == folder.names[:6]
    for name, frame in frames:
        assert frame.is_cuda and frame.dtype == torch.uint8 and tuple(frame.shape) == (480, 854, 3)
        # Not bit-exact (other chroma upsampling), but the same picture.
        cpu = torch.as_tensor(decode_cpu(folder.paths[folder.names.index(name)])).float()
        assert (frame.cpu().float() - cpu).abs().mean() < 3.0
