"""loom.shm against models staged by the real loom-sidecar binary (LOOM_SIDECAR_BIN, or a
release build made on demand by sidecar_native/scripts/build.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from loom import shm


def stage(
    binary: str, directory: Path, *specs: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "stage", "--dir", str(directory), "--termination-log", "", *extra, *specs],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_model(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {
        "embed.weight": rng.standard_normal((257, 64)).astype(np.float32),
        "layer.0.w": rng.standard_normal((64, 33)).astype(np.float16),
        "layer.0.b": rng.standard_normal(33).astype(np.float64),
        "ids": rng.integers(-(2**40), 2**40, size=(7, 3), dtype=np.int64),
        "mask": rng.integers(0, 2, size=(5,)).astype(np.bool_),
        "u16": rng.integers(0, 2**16, size=(9,), dtype=np.uint16),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.int32),
        "cplx": (rng.standard_normal(4) + 1j).astype(np.complex64),
    }
    save_file(tensors, str(path), metadata={"format": "np", "who": "test"})
    return tensors


@pytest.fixture
def staged(binary: str, tmp_path: Path, shm_dir: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    src = tmp_path / "model.safetensors"
    tensors = make_model(src)
    r = stage(binary, shm_dir, f"m={src}")
    assert r.returncode == 0, r.stderr
    return shm_dir, src, tensors


def test_tensors_equal_the_reference_loader_and_are_zero_copy(
    staged: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    shm_dir, src, expected = staged
    reference = load_file(str(src))
    with shm.open_model("m", shm_dir) as model:
        assert set(model) == set(expected)
        assert len(model) == len(expected)
        assert model.metadata == {"format": "np", "who": "test"}
        base = model.address
        for name, want in reference.items():
            got = model[name]
            assert got.dtype == want.dtype, name
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, want)
            assert not got.flags.writeable
            info = model.info(name)
            assert info.offset % 4096 == 0
            if info.nbytes:
                assert got.ctypes.data == base + info.offset  # a view into the mapping, not a copy
        with pytest.raises(ValueError):
            model["embed.weight"][0, 0] = 1.0
        assert model.fingerprint.startswith("sha256:")
        assert model.nbytes % 4096 == 0


def test_views_outlive_close(staged: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    shm_dir, _, expected = staged
    model = shm.open_model("m", shm_dir)
    arrays = model.numpy()
    model.close()
    np.testing.assert_array_equal(arrays["embed.weight"], expected["embed.weight"])


def test_as_torch_shares_the_mapping(staged: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    torch = pytest.importorskip("torch")
    shm_dir, _, expected = staged
    with shm.open_model("m", shm_dir) as model:
        t = model.as_torch("layer.0.w")
        assert isinstance(t, torch.Tensor)
        assert t.dtype == torch.float16
        assert t.data_ptr() == model.address + model.info("layer.0.w").offset
        np.testing.assert_array_equal(t.numpy(), expected["layer.0.w"])
        everything = model.as_torch()
        assert isinstance(everything, dict)
        assert everything["mask"].dtype == torch.bool
        assert everything["cplx"].dtype == torch.complex64
        assert tuple(everything["empty"].shape) == (0, 4)


def test_dtypes_numpy_lacks(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    src = tmp_path / "t.safetensors"
    ref = {
        "bf": torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16),
        "f8": torch.linspace(-2, 2, 8).to(torch.float8_e4m3fn),
        "f8b": torch.linspace(-2, 2, 8).to(torch.float8_e5m2),
    }
    save_torch(ref, str(src))
    assert stage(binary, shm_dir, f"t={src}").returncode == 0
    with shm.open_model("t", shm_dir) as model:
        assert model["bf"].dtype == np.uint16 and model["bf"].shape == (3, 4)  # raw bits in numpy
        np.testing.assert_array_equal(model["bf"], ref["bf"].view(torch.int16).numpy().view(np.uint16))
        for name, want in ref.items():
            got = model.as_torch(name)
            assert isinstance(got, torch.Tensor)
            assert got.dtype == want.dtype
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


def test_sharded_checkpoint_directory(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    a = {"a": np.arange(10, dtype=np.float32)}
    b = {"b": np.arange(20, dtype=np.int16).reshape(4, 5)}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    r = stage(binary, shm_dir, f"sharded={tmp_path}")
    assert r.returncode == 0, r.stderr
    with shm.open_model("sharded", shm_dir, verify_source=True) as model:
        np.testing.assert_array_equal(model["a"], a["a"])
        np.testing.assert_array_equal(model["b"], b["b"])
        assert len(model.manifest.sources) == 2


def test_environment_defaults(
    staged: tuple[Path, Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    shm_dir, _, _ = staged
    monkeypatch.setenv(shm.ENV_MODEL_DIR, str(shm_dir))
    monkeypatch.setenv(shm.ENV_MODEL_NAME, "m")
    with shm.open_model() as model:
        assert model.name == "m"
    monkeypatch.delenv(shm.ENV_MODEL_NAME)
    with shm.open_model() as model:  # the only published model
        assert model.name == "m"
    assert shm.list_models() == ["m"]
    monkeypatch.delenv(shm.ENV_MODEL_DIR)
    with pytest.raises(shm.ShmError, match="LOOM_MODEL_DIR"):
        shm.open_model("m")


def test_unknown_not_ready_and_failed_models(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    with pytest.raises(shm.UnknownModel, match="no model 'nope'"):
        shm.open_model("nope", shm_dir)
    with pytest.raises(shm.UnknownModel):
        shm.open_model("../etc", shm_dir)
    # What the sidecar writes while staging.
    (shm_dir / "slow.state.json").write_text(json.dumps({"name": "slow", "state": "loading"}))
    with pytest.raises(shm.ModelNotReady, match="still being staged") as not_ready:
        shm.open_model("slow", shm_dir, wait=0.2)
    assert type(not_ready.value) is shm.ModelNotReady
    # A real failure: the sidecar records the reason and exit code.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x02\0\0\0\0\0\0\0{}trailing")
    r = stage(binary, shm_dir, f"bad={bad}")
    assert r.returncode == 2
    with pytest.raises(shm.ModelLoadFailed, match="trailing bytes") as failed:
        shm.open_model("bad", shm_dir, wait=5)
    assert failed.value.exit_code == 2


def test_wait_returns_once_published(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    src = tmp_path / "w.safetensors"
    make_model(src)
    proc = subprocess.Popen(
        [binary, "stage", "--dir", str(shm_dir), f"w={src}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with shm.open_model("w", shm_dir, wait=60) as model:
            assert "embed.weight" in model
    finally:
        assert proc.wait(60) == 0


def test_fingerprints(staged: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    shm_dir, src, _ = staged
    with shm.open_model("m", shm_dir) as model:
        fingerprint = model.fingerprint
        recorded = model.manifest.sources[0]
    assert shm.source_fingerprint(str(src)) == recorded  # the client recomputes what the sidecar recorded
    shm.open_model("m", shm_dir, expected_fingerprint=fingerprint, verify_source=True).close()
    with pytest.raises(shm.FingerprintMismatch, match="expected sha256:00"):
        shm.open_model("m", shm_dir, expected_fingerprint="sha256:00")
    make_model(src, seed=1)  # the source changes after staging
    with pytest.raises(shm.FingerprintMismatch, match="changed since it was staged"):
        shm.open_model("m", shm_dir, verify_source=True)
    src.unlink()
    with pytest.raises(shm.FingerprintMismatch, match="no longer exists"):
        shm.open_model("m", shm_dir, verify_source=True)


def test_damaged_manifest_or_region_is_refused(staged: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    shm_dir, _, _ = staged
    manifest_path = shm_dir / "m.manifest.json"
    original = manifest_path.read_text()
    doc = json.loads(original)
    region = shm_dir / doc["region_file"]

    doc["tensors"][0]["offset"] = doc["region_bytes"]
    manifest_path.write_text(json.dumps(doc))
    with pytest.raises(shm.ManifestError, match="outside the region"):
        shm.open_model("m", shm_dir)

    manifest_path.write_text(original)
    os.truncate(region, 4096)
    with pytest.raises(shm.ManifestError, match="manifest says"):
        shm.open_model("m", shm_dir)

    manifest_path.write_text("{not json")
    with pytest.raises(shm.ManifestError, match="not valid JSON"):
        shm.open_model("m", shm_dir)

    for field, value, message in [
        ("format", "loom-shm/9", "unsupported manifest format"),
        ("fingerprint", "sha256:00", "does not match its sources"),
        ("region_file", "../x.region", "does not belong"),
        ("alignment", 100, "bad alignment"),
    ]:
        bad = json.loads(original)
        bad[field] = value
        with pytest.raises(shm.ManifestError, match=message):
            shm.parse_manifest(json.dumps(bad))


def test_restaging_keeps_existing_readers_valid(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    src = tmp_path / "r.safetensors"
    first = make_model(src, seed=0)
    assert stage(binary, shm_dir, f"r={src}").returncode == 0
    old = shm.open_model("r", shm_dir)
    old_view = old["embed.weight"]
    make_model(src, seed=5)
    assert stage(binary, shm_dir, f"r={src}").returncode == 0  # source changed: a new generation
    with shm.open_model("r", shm_dir) as new:
        assert new.manifest.generation != old.manifest.generation
        assert not np.array_equal(new["embed.weight"], first["embed.weight"])
    np.testing.assert_array_equal(old_view, first["embed.weight"])  # the old mapping is untouched
    assert len(list(shm_dir.glob("r.*.region"))) == 1  # the old file is unlinked, not overwritten
    old.close()


def test_pin_needs_cuda(staged: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    shm_dir, _, _ = staged
    try:
        import torch

        has_gpu = bool(torch.cuda.is_available())
    except ImportError:
        has_gpu = False
    if has_gpu:
        with shm.open_model("m", shm_dir, pin=True) as model:
            assert model.pinned
    else:
        with pytest.raises(shm.CudaUnavailable, match=r"pin=True needs the CUDA runtime|cudaHostRegister"):
            shm.open_model("m", shm_dir, pin=True)


def test_empty_model(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    src = tmp_path / "e.safetensors"
    src.write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    assert stage(binary, shm_dir, f"e={src}").returncode == 0
    with shm.open_model("e", shm_dir) as model:
        assert len(model) == 0
        assert model.nbytes == 0
