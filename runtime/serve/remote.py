"""``stmae-serve client``: a video through a server into a folder of masks, written as
``stmae-segment`` writes them.

The same readers (:mod:`runtime.io.frames`), the same checks of the masks
(:func:`runtime.segment_video.load_annotations`) and of the output
(:func:`runtime.segment_video.check_targets`, the gate :mod:`runtime.io.gate`), all before
the network; the same mask writer (:func:`runtime.io.mask_io.write_mask`, a group commit)
and run record. A frame folder's files are sent as they are (the server decodes them
with the same reader), a video's decoded frames as lossless PNG, so the server segments
exactly the frames ``stmae-segment`` would. Frames before the first mask are background,
as offline.

Exit statuses: bad input 2 (before any network); the server refusing the request (a bad
token, a frame it will not take) before any mask is written 2; a server that cannot be
reached or fails, or any failure once masks are written, 1. One line on stderr each time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from stmae.atomic import GroupCommit
from stmae.outputs import real_path

from ..corpus.worker_setup import first_frames
from ..errors import InputError
from ..io.frames import FrameFolder, missing_frames, open_frames
from ..io.gate import begin_run, finish_run
from ..io.mask_io import encode_mask, existing_masks, labels_present, write_mask
from ..segment_video import SegmentSummary, check_output_folder, check_targets, load_annotations, mask_names
from ..segment_video import unused_masks_error
from .client import UNREACHABLE, ServeClient, ServeClientError

TOOL = "stmae-serve client"
PROG = "stmae-serve client"
_REFUSALS = (400, 401, 403, 404, 409, 413, 422)  # the request was wrong, not the server


def _frame_bytes(frames, index: int, frame: np.ndarray) -> bytes:
    """What is sent for frame ``index``: a folder's file as it is, else lossless PNG."""
    if isinstance(frames, FrameFolder):
        return frames.paths[index].read_bytes()
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _frames(frames):
    """(index, name, frame) in order, read and checked by the toolkit's readers."""
    if isinstance(frames, FrameFolder):
        for index, name in enumerate(frames.names):
            yield index, name, frames.read(index)
    else:
        for index, (name, frame) in enumerate(frames):
            yield index, name, frame


def segment_remote(url: str, token: str | None, input_path: str | Path, out_dir: str | Path, *,
                   mask: str | Path | None = None, masks_dir: str | Path | None = None,
                   max_frames: int | None = None, overwrite: bool = False, png_level: int = 1,
                   quiet: bool = False, timeout: float = 60.0) -> int:
    """Segment ``input_path`` on the server at ``url`` into ``out_dir/<frame name>.png``;
    returns the exit status (see the module docstring), printing the summary line."""
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {max_frames}")
    frames = first_frames(open_frames(input_path), max_frames)
    annotations = load_annotations(frames, mask, masks_dir)
    check_targets(input_path, out_dir, None, overwrite, mask, masks_dir)
    check_output_folder(out_dir, overwrite, tool=TOOL, create=False)
    written = 0
    client = ServeClient(url, token, timeout)
    try:
        info = client.info()  # the token and the server are checked before --out is created
        out = check_output_folder(out_dir, overwrite, tool=TOOL)
        begin_run(out, TOOL, outputs=mask_names(frames), candidates=existing_masks(out),
                  input=str(real_path(input_path)), server=url)
        group = GroupCommit(64)
        try:
            count, objects, seconds, written = _run(client, info, frames, annotations, out, group, png_level, quiet)
            group.commit(out)
        except BaseException:
            group.discard(out)
            raise
    except ServeClientError as exc:
        if exc.status in _REFUSALS and written == 0:
            raise InputError(f"the server refused the request: {exc.message}") from None
        where = f" after {written} masks were written to {out_dir}" if written else ""
        print(f"{PROG}: error: {exc}{where}", file=sys.stderr)
        return 1
    finally:
        client.close()
    finish_run(out, TOOL, mask_names(frames, count))
    unused = sorted(set(annotations.masks) - set(frames.names if isinstance(frames, FrameFolder) else
                                                   [f"{i:05d}" for i in range(count)]))
    if unused:
        raise unused_masks_error(unused, count, out)
    summary = SegmentSummary(count, objects, seconds, out, missing_frames(frames, count))
    print(summary.line(f"server {url}, size {info.get('processing_size')}"))
    if summary.warning():
        print(f"{PROG}: warning: {summary.warning()}", file=sys.stderr)
        return 1
    return 0


def _run(client: ServeClient, info: dict, frames, annotations, out: Path, group: GroupCommit, level: int,
         quiet: bool):
    """Stream the frames; write each mask as its result comes. Returns (frames, objects,
    seconds, masks written)."""
    from ..progress import progress_bar

    depth = max(1, int(info.get("limits", {}).get("queue_depth", 1)))
    first = annotations.first_name
    palette = annotations.palette
    names: list[str] = []
    known: set[int] = set()
    stream = session = None
    outstanding = written = 0
    objects: tuple[int, ...] = ()
    start = time.perf_counter()

    def write(name: str, labels: np.ndarray) -> None:
        nonlocal written
        write_mask(out / f"{name}.png", labels, palette, level, group)
        written += 1
        bar.update(1)

    def take_one() -> None:
        nonlocal outstanding, objects
        result = stream.receive()
        write(names[result.frame_index], result.labels)
        objects = result.objects or objects
        outstanding -= 1

    with progress_bar(total=len(frames), unit="frame", disable=quiet) as bar:
        try:
            for _index, name, frame in _frames(frames):
                given = annotations.masks.get(name)
                if session is None and name != first:  # before the first mask: background, as offline
                    write(name, np.zeros(frame.shape[:2], np.uint8))
                    continue
                data = _frame_bytes(frames, _index, frame)
                if session is None:
                    known.update(labels_present(given))
                    session = client.open_session(data, encode_mask(given, None, 1))
                    stream = client.stream(session["session_id"])
                    names.append(name)
                    outstanding = 1
                    continue
                mask_png = None
                if given is not None:  # as offline: a later mask introduces only the labels not seen before
                    new = [v for v in labels_present(given) if v not in known]
                    if new:
                        mask_png = encode_mask(np.where(np.isin(given, new), given, 0).astype(np.uint8), None, 1)
                        known.update(new)
                while outstanding >= depth:
                    take_one()
                stream.send(data, mask_png)
                names.append(name)
                outstanding += 1
            while outstanding:
                take_one()
            if stream is not None:
                stream.finish()
        finally:
            if stream is not None:
                stream.close()
    return written, objects, time.perf_counter() - start, written
