"""model_code/video.py: mp4 through opencv, read back frame by frame (mp4 is lossy: compared within a tolerance)."""
import sys

import numpy as np
import pytest

from model_code import video
from model_code.errors import UserError


def _frames(n, h, w):
    """Smooth moving gradients: content an MPEG-4 encoder keeps well, different in every frame."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    out = []
    for t in range(n):
        r = 127 + 100 * np.sin(2 * np.pi * (xx / w + t / n))
        g = 127 + 100 * np.cos(2 * np.pi * (yy / h - t / n))
        b = np.full_like(xx, 40.0 + 150.0 * t / max(n - 1, 1))
        out.append(np.stack([r, g, b], axis=-1).round().astype(np.uint8))
    return out


def test_arrays_come_back_with_their_count_size_and_content(tmp_path):
    frames = _frames(12, 64, 96)
    path = video.write_mp4(frames, tmp_path / "a.mp4", fps=6)
    back = video.read_mp4(path)
    assert back.shape == (12, 64, 96, 3)
    err = np.abs(back.astype(float) - np.stack(frames).astype(float)).mean(axis=(1, 2, 3))
    assert err.max() < 0.04 * 255, err             # lossy, but each frame is the one written, in order
    # the colour channels keep their order (RGB in, RGB out): frame 0's blue is 40, the last's 190
    assert abs(back[0, ..., 2].mean() - 40) < 12 and abs(back[-1, ..., 2].mean() - 190) < 12
    assert not list(tmp_path.glob(".*tmp*"))        # no temporary file left behind


def test_figures_grey_frames_and_odd_sizes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)

    def drawn():
        for k in range(3):
            ax.clear()
            ax.imshow(np.full((4, 4), k), vmin=0, vmax=2, cmap="gray")
            yield fig

    path = video.write_mp4(drawn(), tmp_path / "fig.mp4", fps=2)
    plt.close(fig)
    back = video.read_mp4(path)
    assert back.shape == (3, 76, 100, 3)                             # 75 px figure, padded to even
    assert back[0].mean() < back[1].mean() < back[2].mean()          # the figure as it was at each frame

    grey = [np.full((9, 11), 200, np.uint8)] * 4                     # odd sides are padded to even ones
    back = video.read_mp4(video.write_mp4(grey, tmp_path / "grey.mp4"))
    assert back.shape == (4, 10, 12, 3) and abs(back.astype(float).mean() - 200) < 6


def test_without_opencv_the_error_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)                    # import cv2 raises ImportError
    with pytest.raises(UserError) as err:
        video.write_mp4(_frames(2, 8, 8), tmp_path / "x.mp4")
    assert "opencv" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "x.mp4").exists()


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        video.write_mp4([np.zeros((8, 8, 3), np.float32)], tmp_path / "f.mp4")
    with pytest.raises(ValueError, match="no frames"):
        video.write_mp4([], tmp_path / "e.mp4")
    assert not list(tmp_path.iterdir())
