"""Data: volcano .int loader, synthetic InSAR physics, make_volcano.py CLI, periodic GRF."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from model_code.data.grf import PeriodicGRF, make_grf_dataset
from model_code.data.volcano import (
    INT_SIDE,
    list_volcano_files,
    load_volcano,
    los_vector,
    mogi_displacement,
    phase_of,
    phase_to_channels,
    read_int_file,
    split_indices,
    synthesize_interferogram,
    write_synthetic_dataset,
)
from model_code.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def wrap(a):
    return np.angle(np.exp(1j * a))


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("volcano")
    paths = write_synthetic_dataset(out, n=12, seed=3)
    return out, paths


# --------------------------------------------------------------------------- volcano loader


def test_written_files_have_real_format(synthetic_dir):
    out, paths = synthetic_dir
    assert len(paths) == 12
    for p in paths:
        assert p.stat().st_size == INT_SIDE * INT_SIDE * 8
        assert p.relative_to(out).parts[:2] == ("subset_128", "synthetic")
    z = read_int_file(paths[0])
    assert z.dtype == np.complex64 and z.shape == (128, 128)
    raw = np.fromfile(paths[0], dtype="<f4").reshape(128, 128, 2)  # interleaved (re, im)
    np.testing.assert_array_equal(raw[..., 0], z.real)
    np.testing.assert_array_equal(raw[..., 1], z.imag)


def test_round_trip_phase(synthetic_dir):
    out, paths = synthetic_dir
    train, valid = load_volcano(out, resolution=None, npad=0, val_size=0.25, seed=0)
    assert train.dtype == torch.float32 and valid.dtype == torch.float32
    assert train.shape == (9, 2, 128, 128) and valid.shape == (3, 2, 128, 128)
    tr_idx, va_idx = split_indices(12, 0.25, 0)
    expected = np.stack([np.angle(read_int_file(p)) for p in paths])
    for data, idx in ((train, tr_idx), (valid, va_idx)):
        phase = phase_of(data).numpy()
        assert phase.shape == (len(idx), 128, 128)
        assert np.abs(wrap(phase - expected[idx])).max() < 1e-5
        norm = torch.linalg.vector_norm(data, dim=1)
        assert torch.allclose(norm, torch.ones_like(norm), atol=1e-6)


def test_resize_and_crop_shapes(synthetic_dir):
    out, _ = synthetic_dir
    train, valid = load_volcano(out, resolution=64, npad=4, val_size=0.25, seed=0)
    assert train.shape == (9, 2, 60, 60) and valid.shape == (3, 2, 60, 60)
    norm = torch.linalg.vector_norm(torch.cat([train, valid]), dim=1)
    assert torch.allclose(norm[norm > 1e-3], torch.ones(()), atol=1e-5)
    big, _ = load_volcano(out, resolution=160, npad=8, val_size=0.25, seed=0)
    assert big.shape == (9, 2, 152, 152)
    published, _ = load_volcano(out, npad=8)
    assert published.shape[-2:] == (120, 120)


def test_crop_takes_half_from_each_end(synthetic_dir):
    out, _ = synthetic_dir
    full, _ = load_volcano(out, npad=0, seed=1)
    odd, _ = load_volcano(out, npad=5, seed=1)  # 2 from the start, 3 from the end
    assert odd.shape[-1] == 123
    assert torch.equal(odd, full[..., 2:125, 2:125])


def test_area_downsampling_matches_block_mean(synthetic_dir):
    out, _ = synthetic_dir
    full, _ = load_volcano(out, seed=0)
    half, _ = load_volcano(out, resolution=64, seed=0)
    block = full.reshape(full.shape[0], 2, 64, 2, 64, 2).mean(dim=(3, 5))
    norm = torch.linalg.vector_norm(block, dim=1, keepdim=True)
    block = block / norm
    # float32 2 x 2 means by two kernels differ by ~eps_32; renormalising divides that by the mean vector's
    # length, which is small where the phase varies fast in a block (down to ~5e-4 here), so the bound is
    # per pixel: 32 eps_32 / |mean| (>= 3.8e-6; 1.4 eps_32 / |mean| measured).
    tol = 32 * torch.finfo(torch.float32).eps / norm
    assert bool(((half - block).abs() <= tol).all())


def test_split_deterministic_disjoint_covering():
    a_tr, a_va = split_indices(50, 0.1, seed=7)
    b_tr, b_va = split_indices(50, 0.1, seed=7)
    np.testing.assert_array_equal(a_tr, b_tr)
    np.testing.assert_array_equal(a_va, b_va)
    assert len(a_va) == 5 and len(a_tr) == 45
    assert set(a_tr).isdisjoint(a_va)
    assert sorted(np.concatenate([a_tr, a_va]).tolist()) == list(range(50))
    _, c_va = split_indices(50, 0.1, seed=8)
    assert not np.array_equal(a_va, c_va)
    # At least one on each side.
    assert [len(s) for s in split_indices(2, 0.0, 0)] == [1, 1]
    assert [len(s) for s in split_indices(3, 0.99, 0)] == [1, 2]
    with pytest.raises(UserError):
        split_indices(1, 0.1, 0)


def test_file_list_sorted_regardless_of_creation_order(tmp_path):
    z = synthesize_interferogram(np.random.default_rng(0))
    names = ["b/001.int", "a/9.int", "a/10.int", "a-b/x.int", "c.int"]
    for name in names:  # creation order is not sorted order
        path = tmp_path / "subset_128" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        z.astype("<c8").tofile(path)
    (tmp_path / "subset_128" / "notes.txt").write_text("ignored")
    files = list_volcano_files(tmp_path)
    rel = [p.relative_to(tmp_path / "subset_128").as_posix() for p in files]
    assert rel == sorted(names)
    assert rel[:2] == ["a-b/x.int", "a/10.int"]


def test_truncated_file_is_user_error(tmp_path):
    bad = tmp_path / "short.int"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(UserError) as err:
        read_int_file(bad)
    message = str(err.value)
    assert str(bad) in message and "1000" in message and "\n" not in message


def test_truncated_file_fails_the_loader(tmp_path):
    write_synthetic_dataset(tmp_path, n=3, seed=0)
    victim = tmp_path / "subset_128" / "synthetic" / "00001.int"
    victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(UserError, match="00001.int"):
        load_volcano(tmp_path)


def test_missing_folders_are_user_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as err:
        list_volcano_files(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError) as err:
        load_volcano(tmp_path)  # exists, but no subset_128/
    assert "subset_128" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "subset_128" / "empty").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        list_volcano_files(tmp_path)
    assert "subset_128" in str(err.value) and "\n" not in str(err.value)


def test_bad_arguments_are_user_errors(synthetic_dir):
    out, _ = synthetic_dir
    with pytest.raises(UserError):
        load_volcano(out, resolution=0)
    with pytest.raises(UserError):
        load_volcano(out, npad=128)
    with pytest.raises(UserError):
        load_volcano(out, val_size=1.5)


def test_phase_channels_round_trip():
    phase = np.linspace(-math.pi + 1e-3, math.pi, 101, dtype=np.float32).reshape(1, 101)
    ch = phase_to_channels(phase)
    assert ch.shape == (2, 1, 101) and ch.dtype == np.float32
    back = phase_of(torch.from_numpy(ch)[None])[0].numpy()
    # float32 cos / sin / atan2 (SIMD libm, machine-dependent) and the subtraction near 2 pi: a few ulp of pi
    # (1.3 ulp measured); 16 ulp(pi) = 3.8e-6. float32 pi may come back as -pi.
    assert np.abs(wrap(back - phase)).max() < 16 * np.spacing(np.float32(math.pi))
    assert back.min() >= -math.pi and back.max() <= math.pi


# --------------------------------------------------------------------------- synthetic physics


def test_mogi_against_hand_computation():
    # Source 2 km deep under the origin, dV = 1e6 m^3, nu = 0.25; point (3 km E, 4 km N): r = 5 km.
    u_e, u_n, u_z = mogi_displacement(3000.0, 4000.0, 0.0, 0.0, depth=2000.0, dvolume=1e6, nu=0.25)
    c = 0.75 * 1e6 / math.pi  # (1 - nu) dV / pi = 238732.41 m^3
    big_r3 = (5000.0**2 + 2000.0**2) ** 1.5  # R^3 = 29e6^1.5 = 1.56170e11 m^3
    assert u_z == pytest.approx(c * 2000.0 / big_r3, rel=1e-12)
    assert u_z == pytest.approx(3.05733e-3, rel=1e-5)
    u_r = math.hypot(u_e, u_n)
    assert u_r == pytest.approx(c * 5000.0 / big_r3, rel=1e-12)
    assert u_r == pytest.approx(7.64332e-3, rel=1e-5)
    assert u_e / u_n == pytest.approx(3.0 / 4.0)
    # Directly above the source: u_z = (1 - nu) dV / (pi d^2), no horizontal motion; deflation flips signs.
    u_e, u_n, u_z = mogi_displacement(0.0, 0.0, 0.0, 0.0, depth=1000.0, dvolume=-2e6)
    assert (u_e, u_n) == (0.0, 0.0)
    assert u_z == pytest.approx(-0.75 * 2e6 / (math.pi * 1000.0**2))


def test_los_vector():
    inc = math.radians(35.0)
    for heading_deg in (-12.0, 192.0, 0.0):
        v = los_vector(inc, math.radians(heading_deg))
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert v[2] == pytest.approx(math.cos(inc))
    # Heading north, right-looking: radar looks east, so the satellite is to the west.
    v = los_vector(inc, 0.0)
    assert v[0] == pytest.approx(-math.sin(inc)) and v[1] == pytest.approx(0.0, abs=1e-12)


def test_interferogram_is_wrapped_phase_of_the_model():
    rng = np.random.default_rng(5)
    for _ in range(4):
        z, parts = synthesize_interferogram(rng, return_components=True)
        assert z.dtype == np.complex64 and z.shape == (128, 128)
        phase = np.angle(z)
        assert phase.min() >= -math.pi and phase.max() <= math.pi
        assert 0.3 <= parts["coherence"] <= 0.9
        assert 0.5 < np.mean(np.abs(z) ** 2) < 1.5
        total = parts["deformation"] + parts["atmosphere"] + parts["ramp"]
        np.testing.assert_allclose(total, parts["phase"])
    # Coherence 1: the stored angle is exactly the wrapped model phase, |z| = 1.
    z, parts = synthesize_interferogram(np.random.default_rng(1), coherence=(1.0, 1.0), return_components=True)
    assert np.abs(wrap(np.angle(z) - parts["phase"])).max() < 1e-5
    np.testing.assert_allclose(np.abs(z), 1.0, atol=1e-6)
    assert np.ptp(parts["phase"]) > 2 * math.pi  # really wrapped, not just small
    # The deformation equals 4 pi / lambda times the LOS projection of the Mogi field.
    s, w = parts["source"], parts["width"]
    coords = (np.arange(128) + 0.5) * w / 128
    east, north = np.meshgrid(coords, coords[::-1])
    u = mogi_displacement(east, north, s["x0"], s["y0"], s["depth"], s["dvolume"])
    look = los_vector(parts["incidence"], parts["heading"])
    los = u[0] * look[0] + u[1] * look[1] + u[2] * look[2]
    np.testing.assert_allclose(parts["deformation"], 4 * math.pi / 0.0555 * los, rtol=1e-10)


def test_synthetic_dataset_is_seeded(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n=3, seed=11)
    b = write_synthetic_dataset(tmp_path / "b", n=2, seed=11)
    c = write_synthetic_dataset(tmp_path / "c", n=2, seed=12)
    assert a[1].read_bytes() == b[1].read_bytes()  # file i depends on (seed, i) only
    assert a[0].read_bytes() != c[0].read_bytes()


def test_overwrite_rules(tmp_path):
    first = write_synthetic_dataset(tmp_path, n=3, seed=0)
    with pytest.raises(UserError, match="--force"):
        write_synthetic_dataset(tmp_path, n=3, seed=1)
    again = write_synthetic_dataset(tmp_path, n=2, seed=1, overwrite=True)
    assert len(list_volcano_files(tmp_path)) == 2 and again == first[:2]
    real = tmp_path / "subset_128" / "real" / "x.int"
    real.parent.mkdir()
    real.write_bytes(first[0].read_bytes())
    with pytest.raises(UserError, match="outside"):
        write_synthetic_dataset(tmp_path, n=2, seed=1, overwrite=True)
    assert real.exists()


# --------------------------------------------------------------------------- make_volcano.py CLI


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_volcano.py"), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "data"
    res = run_cli("--out", str(out), "--n", "4", "--seed", "0", "--quiet")
    assert res.returncode == 0, res.stderr
    files = sorted((out / "subset_128" / "synthetic").glob("*.int"))
    assert [f.name for f in files] == ["00000.int", "00001.int", "00002.int", "00003.int"]
    assert all(f.stat().st_size == 131072 for f in files)
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}

    res = run_cli("--out", str(out), "--n", "4", "--seed", "1")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and "Traceback" not in res.stderr
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before

    res = run_cli("--out", str(out), "--n", "4", "--seed", "1", "--force")
    assert res.returncode == 0, res.stderr
    assert "wrote 4" in res.stdout
    assert files[0].read_bytes() != before[files[0]][1]


def test_cli_help_documents_every_flag():
    res = run_cli("--help")
    assert res.returncode == 0
    for flag in ("--out", "--n", "--seed", "--force", "--quiet"):
        assert flag in res.stdout


# --------------------------------------------------------------------------- periodic GRF


def mc_check(estimates, exact, n_sigma=5.0):
    """Independent per-sample estimates: their mean must be within n_sigma standard errors."""
    estimates = np.asarray(estimates, dtype=np.float64)
    se = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < n_sigma * se + 1e-12, (estimates.mean(), exact, se)


def test_grf_continuum_normalisation():
    grf = PeriodicGRF(alpha=2.5, tau=7.0)
    variances = [grf.pointwise_variance(n) for n in (8, 32, 64, 256)]
    assert all(a < b for a, b in zip(variances, variances[1:]))  # more modes, more variance
    assert variances[-1] == pytest.approx(1.0, abs=1e-5)
    # Explicit scale multiplies the eigenvalues by scale^2.
    fixed = PeriodicGRF(alpha=2.0, tau=3.0, scale=2.0)
    k = np.fft.fftfreq(16, d=1 / 16)
    lam = 4.0 * (4 * math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + 9.0) ** -2.0
    np.testing.assert_allclose(fixed.eigenvalues(16).numpy(), lam, rtol=1e-12)
    assert fixed.pointwise_variance(16) == pytest.approx(lam.sum(), rel=1e-12)
    assert fixed.covariance_row(16)[0, 0].item() == pytest.approx(lam.sum(), rel=1e-12)
    with pytest.raises(UserError):
        PeriodicGRF(alpha=1.0)
    with pytest.raises(UserError):
        PeriodicGRF(tau=0.0)


def test_grf_exact_covariance_is_stationary():
    """The sampling map is linear in the white noise; its covariance matrix, built exactly
    from unit inputs, is circulant and equals covariance_row at every base point."""
    n = 8
    grf = PeriodicGRF(alpha=2.0, tau=5.0)
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    a = grf.from_white_noise(torch.complex(eye, torch.zeros_like(eye))).reshape(n * n, n * n)
    b = grf.from_white_noise(torch.complex(torch.zeros_like(eye), eye)).reshape(n * n, n * n)
    cov = (a.T @ a + b.T @ b).numpy()  # rows of a/b index the noise inputs
    row = grf.covariance_row(n).numpy()
    for i0, j0 in [(0, 0), (3, 5), (7, 2)]:
        expected = np.roll(row, shift=(i0, j0), axis=(0, 1)).ravel()
        np.testing.assert_allclose(cov[i0 * n + j0], expected, atol=1e-12 * row[0, 0] + 1e-15)
    # The row is the cosine sum of the eigenvalues, symmetric in the offset.
    np.testing.assert_allclose(row, np.roll(row[::-1, ::-1], shift=(1, 1), axis=(0, 1)), atol=1e-15)


@pytest.mark.parametrize("resolution,n_samples", [(32, 3000), (64, 1500)])
def test_grf_empirical_variance_and_covariance(resolution, n_samples):
    grf = PeriodicGRF()
    x = grf.sample(n_samples, resolution, torch.Generator().manual_seed(resolution))
    assert x.shape == (n_samples, 1, resolution, resolution) and x.dtype == torch.float32
    assert not torch.is_complex(x)
    x = x[:, 0].double()
    exact_var = grf.pointwise_variance(resolution)
    assert exact_var == pytest.approx(1.0, abs=3e-4)
    mc_check((x**2).mean(dim=(1, 2)).numpy(), exact_var)
    assert (x**2).mean().item() == pytest.approx(exact_var, rel=0.05)
    row = grf.covariance_row(resolution)
    for di, dj in [(0, 1), (1, 0), (2, 3), (resolution // 2, 0), (5, resolution - 2)]:
        shifted = torch.roll(x, shifts=(-di, -dj), dims=(1, 2))  # shifted[i, j] = x[i + di, j + dj]
        mc_check((x * shifted).mean(dim=(1, 2)).numpy(), row[di, dj].item())
    # Stationarity from samples: the same offset at different base points (no spatial averaging).
    h = (1, 2)
    for i0, j0 in [(0, 0), (resolution // 3, resolution - 5)]:
        prod = x[:, i0, j0] * x[:, (i0 + h[0]) % resolution, (j0 + h[1]) % resolution]
        mc_check(prod.numpy(), row[h].item())


def test_grf_seeded_and_dataset():
    grf = PeriodicGRF()
    a = grf.sample(4, 16, torch.Generator().manual_seed(3))
    b = grf.sample(4, 16, torch.Generator().manual_seed(3))
    c = grf.sample(4, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    train, valid = make_grf_dataset(6, 3, 16, seed=2)
    assert train.shape == (6, 1, 16, 16) and valid.shape == (3, 1, 16, 16)
    train2, valid2 = make_grf_dataset(6, 3, 16, seed=2)
    assert torch.equal(train, train2) and torch.equal(valid, valid2)
    assert not torch.equal(train[:3], valid)  # disjoint seeds for the splits
    other, _ = make_grf_dataset(6, 3, 16, seed=3)
    assert not torch.equal(other, train)


def test_grf_rough_field_variance_tracks_resolution():
    """A rough field (alpha=1.5, tau=40) has much variance at high frequencies, so its exact
    pointwise variance grows visibly with resolution; samples must follow it to ~0.5%."""
    grf = PeriodicGRF(alpha=1.5, tau=40.0)
    exact = {n: grf.pointwise_variance(n) for n in (32, 64)}
    assert exact[32] == pytest.approx(0.66262, rel=1e-4) and exact[64] == pytest.approx(0.82322, rel=1e-4)
    for n, n_samples in ((32, 2000), (64, 1000)):
        x = grf.sample(n_samples, n, torch.Generator().manual_seed(10 + n))[:, 0].double()
        per_sample = (x**2).mean(dim=(1, 2)).numpy()
        mc_check(per_sample, exact[n])
        assert per_sample.mean() == pytest.approx(exact[n], rel=0.006)
        row = grf.covariance_row(n)
        lag1 = (x * torch.roll(x, shifts=-1, dims=2)).mean(dim=(1, 2)).numpy()
        assert lag1.mean() == pytest.approx(row[0, 1].item(), rel=0.01)


def test_non_finite_values_in_an_int_file_are_a_one_line_error(tmp_path):
    import numpy as np
    import pytest

    from model_code.data.volcano import INT_SIDE, read_int_file
    from model_code.errors import UserError

    z = np.ones((INT_SIDE, INT_SIDE), dtype="<c8")
    z[3, 4] = np.nan
    path = tmp_path / "nan.int"
    z.tofile(path)
    with pytest.raises(UserError, match=r"nan.int holds 1 non-finite"):
        read_int_file(path)


# --------------------------------------------------------------------------- registry (data/__init__.py)


def test_load_dataset_volcano_and_grf(synthetic_dir):
    from model_code.data import load_dataset

    out, _ = synthetic_dir
    d = load_dataset("volcano", data_dir=out, resolution=32, npad=4, val_size=0.25, split_seed=1)
    train, valid = load_volcano(out, resolution=32, npad=4, val_size=0.25, seed=1)
    assert torch.equal(d.train, train) and torch.equal(d.valid, valid)
    assert (d.kind, d.levels, d.num_classes, d.train_labels, d.shape) == ("phase", None, 0, None, (2, 28, 28))
    assert len(load_dataset("volcano", data_dir=out, max_examples=8, val_size=0.25).train) == 6
    g = load_dataset("grf", n_train=5, n_valid=3, resolution=20, npad=4, split_seed=2)
    train, valid = make_grf_dataset(5, 3, 16, seed=2)
    assert torch.equal(g.train, train) and torch.equal(g.valid, valid) and g.kind == "real" and g.levels is None


def test_load_dataset_bad_input_is_a_user_error(tmp_path):
    from model_code.data import load_dataset

    for name, options, match in (
        ("imagenet", {}, "unknown dataset 'imagenet'"),
        ("grf", {"n_trian": 4}, "n_trian"),
        ("grf", {"resolution": 8, "npad": 8}, "npad"),
        ("grf", {"n_train": 0}, "n_train"),
        ("volcano", {}, "data folder"),
        ("volcano", {"data_dir": tmp_path / "missing"}, "does not exist"),
        ("digits", {"max_examples": 0}, "max_examples"),
        ("digits", {"image_size": 0}, "image size"),
        ("digits", {"num_channels": 2}, "channels"),
        ("digits", {"valid_fraction": 1.5}, "valid_fraction"),
        ("folder", {"image_size": 8}, "root"),
        ("folder", {"root": tmp_path}, "image_size"),
    ):
        with pytest.raises(UserError, match=match):
            load_dataset(name, **options)


def test_digits_come_with_their_labels():
    from sklearn.datasets import load_digits

    from model_code.data import load_dataset

    d = load_dataset("digits", valid_fraction=0.2, split_seed=3, max_examples=1000)
    assert (d.kind, d.levels, d.num_classes) == ("image", 17, 10)
    assert d.train.shape == (1000, 1, 8, 8) and d.train_labels.shape == (1000,) and d.train_labels.dtype == torch.long
    assert len(d.valid) == len(d.valid_labels) == 359
    # Every (image, label) pair is one of scikit-learn's (digits has no image with two labels).
    ref = load_digits()
    lookup = {}
    for image, target in zip(ref.images, ref.target):
        lookup.setdefault((image / 16.0).astype(np.float32).tobytes(), set()).add(int(target))
    for images, labels in ((d.train, d.train_labels), (d.valid, d.valid_labels)):
        for image, label in zip(images[:, 0].numpy(), labels.tolist()):
            assert lookup[image.tobytes()] == {label}
    assert torch.bincount(d.valid_labels, minlength=10).min() > 20       # every class in the validation split


def test_images_at_another_size_and_channel_count():
    from model_code.data import load_dataset

    d = load_dataset("digits", split_seed=0)
    small = load_dataset("digits", image_size=4, num_channels=3, split_seed=0)
    assert small.train.shape == (len(d.train), 3, 4, 4) and torch.equal(small.train_labels, d.train_labels)
    # Area averaging of 2 x 2 blocks, requantised to the 17-level grid, repeated over 3 channels.
    blocks = torch.nn.functional.avg_pool2d(d.valid, 2)
    assert torch.equal(small.valid[:, :1], torch.round(blocks * 16) / 16)
    assert torch.equal(small.valid[:, 0], small.valid[:, 2])
    big = load_dataset("digits", image_size=16, split_seed=0)
    assert big.train.shape == (len(d.train), 1, 16, 16) and torch.equal(big.train * 16, torch.round(big.train * 16))


def test_image_folder_has_no_labels(tmp_path):
    from PIL import Image

    from model_code.data import load_dataset

    for i in range(5):
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    d = load_dataset("folder", root=tmp_path, image_size=8, valid_fraction=0.2)
    assert d.train.shape == (4, 3, 8, 8) and d.train_labels is None and d.valid_labels is None
    assert (d.kind, d.levels, d.num_classes) == ("image", 256, 0)
    values = sorted(float(v) for v in torch.cat([d.train, d.valid])[:, 0, 0, 0])
    assert values == pytest.approx([40 * i / 255 for i in range(5)])
