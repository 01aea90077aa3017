"""Carry a DAVIS-layout training set to a lent GPU machine, where at most 64 MiB travels.

The 25 training videos of DAVIS 2016 at 240p are 62 MB of JPEGs; as near-lossless H.264
(crf 16: 22 MiB, 38 dB PSNR against the source JPEGs). `pack` writes one .mp4
per video plus its first-frame label and a manifest; `unpack` (on the GPU machine, whose
python3 has OpenCV but no PyAV) decodes them back into a DAVIS layout of JPEGs that
`stmae-train --davis` reads. Only first-frame labels travel: training opens no others.

Usage:
  python benchmarks/gpu_data_pack.py pack DAVIS_ROOT RESOLUTION OUT_DIR [--exclude SEQ ...]
  python3 benchmarks/gpu_data_pack.py unpack PACK_DIR OUT_ROOT
unpack checks every video's frame count (a decoder that drops frames is refused). Exit 2
with one line on bad input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

CRF = 16


def pack(root: Path, resolution: str, out: Path, exclude: set[str]) -> dict:
    import av
    from PIL import Image

    frames_root = root / "JPEGImages" / resolution
    labels_root = root / "Annotations" / resolution
    if not frames_root.is_dir() or not labels_root.is_dir():
        raise SystemExit(f"pack: {root} has no JPEGImages/{resolution} and Annotations/{resolution}; "
                         "give a DAVIS-layout root and one of its resolutions")
    if out.exists():
        raise SystemExit(f"pack: {out} exists; give a new folder")
    (out / "videos").mkdir(parents=True)
    (out / "labels").mkdir()
    manifest = {"resolution": resolution, "crf": CRF, "videos": {}}
    for video in sorted(p.name for p in frames_root.iterdir() if p.is_dir()):
        if video in exclude:
            continue
        names = sorted(p.name for p in (frames_root / video).glob("*.jpg"))
        first_label = labels_root / video / (Path(names[0]).stem + ".png")
        if not names or not first_label.is_file():
            continue
        first = np.asarray(Image.open(frames_root / video / names[0]).convert("RGB"))
        height, width = first.shape[:2]
        container = av.open(str(out / "videos" / f"{video}.mp4"), mode="w")
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(CRF), "preset": "medium"}
        for name in names:
            rgb = np.asarray(Image.open(frames_root / video / name).convert("RGB"))
            rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        shutil.copyfile(first_label, out / "labels" / f"{video}.png")
        manifest["videos"][video] = {"frames": names, "height": height, "width": width}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(pack_dir: Path, out_root: Path) -> dict:
    import cv2

    manifest_path = pack_dir / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"unpack: {pack_dir} has no manifest.json; give a folder made by 'pack'")
    manifest = json.loads(manifest_path.read_text())
    resolution = manifest["resolution"]
    counts = {}
    for video, entry in manifest["videos"].items():
        frames_dir = out_root / "JPEGImages" / resolution / video
        labels_dir = out_root / "Annotations" / resolution / video
        frames_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(pack_dir / "videos" / f"{video}.mp4"))
        written = 0
        for name in entry["frames"]:
            ok, bgr = capture.read()
            if not ok:
                break
            bgr = bgr[: entry["height"], : entry["width"]]
            if not cv2.imwrite(str(frames_dir / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise SystemExit(f"unpack: could not write {frames_dir / name}")
            written += 1
        capture.release()
        if written != len(entry["frames"]):
            raise SystemExit(f"unpack: {video}.mp4 decoded {written} of {len(entry['frames'])} frames; "
                             "this OpenCV cannot read the pack (needs an FFmpeg backend with H.264)")
        shutil.copyfile(pack_dir / "labels" / f"{video}.png",
                        labels_dir / (Path(entry["frames"][0]).stem + ".png"))
        counts[video] = written
    image_sets = out_root / "ImageSets" / "2016"
    image_sets.mkdir(parents=True, exist_ok=True)
    (image_sets / "train.txt").write_text("".join(f"{v}\n" for v in counts))
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("root", type=Path)
    p.add_argument("resolution")
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", nargs="*", default=[])
    u = sub.add_parser("unpack")
    u.add_argument("pack_dir", type=Path)
    u.add_argument("out_root", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.root, args.resolution, args.out, set(args.exclude))
            size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
            print(f"packed {len(manifest['videos'])} videos into {args.out} ({size / 2**20:.1f} MiB)")
        else:
            counts = unpack(args.pack_dir, args.out_root)
            print(f"unpacked {len(counts)} videos, {sum(counts.values())} frames, into {args.out_root}")
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
