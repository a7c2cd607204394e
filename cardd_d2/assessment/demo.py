"""Library side of ``tools/demo.py``: run a predictor over images, folders, globs or videos and save overlays + JSON.

For every image ``<name>.jpg`` (detectron2 Visualizer overlay: class names, scores, masks) and ``<name>.json``
(``{"file", "width", "height", "warnings", "instances": [...]}`` with the dicts of
:func:`cardd_d2.assessment.instances.instances_to_dicts`) are written to the output folder. A video gives
``<name>.mp4`` (annotated frames) and ``<name>.json`` with one entry per frame. Files that cannot be read are reported
and skipped; the run goes on.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional, Sequence

from cardd_sod.fileio import atomic_save_json

from .images import DEFAULT_MAX_SIDE, VIDEO_EXTENSIONS, ImageLoadError, discover_inputs, load_image
from .instances import instances_to_dicts
from .predictor import draw_instances

logger = logging.getLogger(__name__)

__all__ = ["run_demo"]


def _run_video(path: str, name: str, predictor, metadata, out_dir: str, score_threshold: float,
               with_polygons: bool, progress: bool, max_frames: Optional[int]) -> int:
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageLoadError(path, "cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    writer, frames = None, []
    out_video = os.path.join(out_dir, name + ".mp4")
    try:
        for idx in tqdm(range(total or 10**9), desc=os.path.basename(path), unit="frame", disable=not progress,
                        total=total):
            if max_frames is not None and idx >= max_frames:
                break
            ok, frame = cap.read()
            if not ok:
                break
            inst = predictor(frame)["instances"]
            vis = draw_instances(frame, inst, metadata, score_threshold)[:, :, ::-1]
            if writer is None:
                h, w = vis.shape[:2]
                writer = cv2.VideoWriter(out_video, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise ImageLoadError(path, f"cannot write the annotated video {out_video}")
            writer.write(vis.copy())
            frames.append({"frame": idx, "instances": instances_to_dicts(
                inst, metadata.get("thing_classes"), frame.shape[:2], with_polygon=with_polygons,
                score_threshold=score_threshold)})
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise ImageLoadError(path, "video has no readable frames")
    atomic_save_json({"file": path, "fps": fps, "frames": frames}, os.path.join(out_dir, name + ".json"), indent=1)
    return len(frames)


def run_demo(inputs: Sequence[str], predictor: Callable, metadata, output_dir: str, *,
             score_threshold: float = 0.0, with_polygons: bool = False, max_side: int = DEFAULT_MAX_SIDE,
             progress: bool = True, max_video_frames: Optional[int] = None) -> dict:
    """Returns ``{"processed": [names], "failed": [(path, reason)], "skipped": [(path, reason)]}``."""
    from PIL import Image
    from tqdm import tqdm

    os.makedirs(output_dir, exist_ok=True)
    items = discover_inputs(inputs, allow_videos=True)
    done: List[str] = []
    failed, skipped = [], []
    images = [it for it in items if not it.path.lower().endswith(VIDEO_EXTENSIONS)]
    videos = [it for it in items if it.path.lower().endswith(VIDEO_EXTENSIONS)]
    for it in tqdm(images, desc="demo", unit="img", disable=not progress or len(images) <= 1):
        if it.error:
            failed.append((it.path, it.error))
            continue
        if it.skip_reason:
            skipped.append((it.path, it.skip_reason))
            continue
        try:
            img = load_image(it.path, max_side=max_side)
            for w in img.warnings:
                logger.info("%s: %s", it.path, w)
            inst = predictor(img.bgr)["instances"]
            vis = draw_instances(img.bgr, inst, metadata, score_threshold)
            Image.fromarray(vis).save(os.path.join(output_dir, it.name + ".jpg"), quality=90)
            atomic_save_json({
                "file": it.path, "width": img.width, "height": img.height, "scale": img.scale,
                "warnings": img.warnings,
                "instances": instances_to_dicts(inst, metadata.get("thing_classes"), (img.height, img.width),
                                                with_polygon=with_polygons, score_threshold=score_threshold)},
                os.path.join(output_dir, it.name + ".json"), indent=1)
            done.append(it.name)
        except ImageLoadError as e:
            failed.append((it.path, e.reason))
        except Exception as e:  # noqa: BLE001 - one bad file must not lose the batch
            logger.exception("demo failed on %s", it.path)
            failed.append((it.path, f"{type(e).__name__}: {e}"))
    for it in videos:
        try:
            n = _run_video(it.path, it.name, predictor, metadata, output_dir, score_threshold, with_polygons,
                           progress, max_video_frames)
            done.append(it.name)
            logger.info("%s: %d frames", it.path, n)
        except ImageLoadError as e:
            failed.append((it.path, e.reason))
        except Exception as e:  # noqa: BLE001
            logger.exception("demo failed on %s", it.path)
            failed.append((it.path, f"{type(e).__name__}: {e}"))
    for path, reason in failed:
        logger.warning("skipped %s: %s", path, reason)
    return {"processed": done, "failed": failed, "skipped": skipped}
