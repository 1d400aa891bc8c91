"""mp4 videos through opencv (fourcc mp4v): sample.py's process.mp4 and the toy's score_field.mp4.

Frames are RGB uint8 arrays (H, W, 3) or matplotlib figures (drawn when they are reached, so a
generator can redraw one figure per frame). Every frame is brought to the first frame's size.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import UserError


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise UserError(f"writing an mp4 needs opencv ({err}); install it with "
                        f"pip install opencv-python-headless (it is in requirements.txt)") from None
    return cv2


def figure_array(fig) -> np.ndarray:
    """The RGB pixels (H, W, 3) uint8 of a matplotlib figure as it is drawn now."""
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba(), dtype=np.uint8)[:, :, :3]


def as_frame(frame) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from an array (grey (H, W) or (H, W, 1|3|4)) or a matplotlib figure."""
    if hasattr(frame, "canvas"):
        return figure_array(frame)
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8 arrays, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"a video frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def _even(a: np.ndarray) -> np.ndarray:
    # MPEG-4 encoders work on 2x2 chroma blocks; an odd side is padded by repeating the edge rather
    # than left to the encoder, which may refuse it or crop it.
    h, w = a.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return a
    return np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _out_of_space(folder: Path) -> bool:
    from .files import free_bytes

    free = free_bytes(folder)
    return free is not None and free < 64 << 10           # a failed write leaves less than a block or so


def _failed(path: Path, what: str):
    """opencv reports a failed write as False (and the final index as nothing at all): a full disk is
    files.DiskFull, anything else one line."""
    if _out_of_space(path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return UserError(f"opencv failed to {what} {path}")


def write_mp4(frames: Iterable, path, fps: float = 10.0) -> Path:
    """Write `frames` (module docstring) to the mp4 file `path`; returns the path.

    The file appears whole or not at all: it is written under a temporary name, synced and renamed.
    """
    from .files import reporting_disk_full, temporary_path

    cv2 = _cv2()
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the .mp4 suffix: opencv picks the container from it
    tmp = temporary_path(path, ".tmp.mp4")
    writer, size = None, None
    with reporting_disk_full(path):
        try:
            for frame in frames:
                a = _even(as_frame(frame))
                if writer is None:
                    size = (a.shape[1], a.shape[0])
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                    if not writer.isOpened():
                        if _out_of_space(path.parent):
                            raise _failed(path, "open")
                        raise UserError(f"opencv cannot write an mp4v video to {path} (its build lacks the encoder?)")
                elif (a.shape[1], a.shape[0]) != size:
                    a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
                if writer.write(np.ascontiguousarray(a[:, :, ::-1])) is False:      # opencv takes BGR
                    raise _failed(path, "write a frame of")
            if writer is None:
                raise ValueError(f"no frames to write to {path}")
            writer.release()
            writer = None
            if _out_of_space(path.parent):               # the index written at release may have been cut off
                raise _failed(path, "finish")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if writer is not None:
                writer.release()
            tmp.unlink(missing_ok=True)
    return path


def read_mp4(path) -> np.ndarray:
    """Every frame of a video as RGB uint8 (T, H, W, 3) (for tests and checks)."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame[:, :, ::-1])
    finally:
        cap.release()
    if not frames:
        raise UserError(f"no frames could be read from {path}")
    return np.stack(frames)
