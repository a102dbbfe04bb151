"""Zero-copy access to models staged in shared memory by the Loom sidecar (``loom-sidecar``).

The sidecar stages each model once per pod into the pod's memory ``emptyDir`` (the serving
container sees it as ``$LOOM_MODEL_DIR``). Per model ``NAME`` the directory holds::

    NAME.GEN.region       the tensor bytes, each tensor at an aligned offset (4 KiB by default)
    NAME.manifest.json    name, dtype, shape, offset, nbytes per tensor + source fingerprint;
                          renamed into place last, so its presence means "ready"
    NAME.state.json       advisory: loading / loaded / failed, with the reason

:func:`open_model` maps the region read-only and hands out numpy arrays (or torch tensors via
:meth:`StagedModel.as_torch`) that point into the mapping: nothing is copied, so a second
consumer or a restarted serving container is ready in milliseconds. The arrays are read-only;
copy before modifying. With ``pin=True`` the mapping is registered with CUDA
(``cudaHostRegister``) so host-to-device copies run at full PCIe speed.

Dtypes numpy lacks are returned as raw bits: BF16 as ``uint16``, ``F8_*`` as ``uint8`` (same
shape), ``F4``/``F6_*`` as packed ``uint8`` bytes of shape ``(nbytes,)``; ``as_torch`` returns
the real torch dtype where torch has one.

Pure stdlib + numpy; torch is imported only by :meth:`StagedModel.as_torch` and ``pin=True``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import itertools
import json
import mmap
import os
import struct
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENV_MODEL_DIR",
    "ENV_MODEL_NAME",
    "CudaUnavailable",
    "FingerprintMismatch",
    "Manifest",
    "ManifestError",
    "ModelLoadFailed",
    "ModelNotReady",
    "ShmError",
    "SourceFingerprint",
    "StagedModel",
    "TensorInfo",
    "list_models",
    "open_model",
    "parse_manifest",
    "source_fingerprint",
]

ENV_MODEL_DIR = "LOOM_MODEL_DIR"
ENV_MODEL_NAME = "LOOM_MODEL_NAME"
MANIFEST_FORMAT = "loom-shm/1"
_MANIFEST_SUFFIX = ".manifest.json"
_SAMPLE_BYTES = 64 << 10  # must match kFingerprintSampleBytes in the sidecar
_POLL_SECONDS = 0.05
_CUDA_HOST_REGISTER_PORTABLE = 0x01
_CUDA_HOST_REGISTER_READ_ONLY = 0x08

# dtype -> (bits per element, numpy dtype or None for raw bytes)
_DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "bool"),
    "F4": (4, None),
    "F6_E2M3": (6, None),
    "F6_E3M2": (6, None),
    "U8": (8, "uint8"),
    "I8": (8, "int8"),
    "F8_E5M2": (8, "uint8"),
    "F8_E4M3": (8, "uint8"),
    "F8_E8M0": (8, "uint8"),
    "F8_E4M3FNUZ": (8, "uint8"),
    "F8_E5M2FNUZ": (8, "uint8"),
    "I16": (16, "<i2"),
    "U16": (16, "<u2"),
    "F16": (16, "<f2"),
    "BF16": (16, "<u2"),
    "I32": (32, "<i4"),
    "U32": (32, "<u4"),
    "F32": (32, "<f4"),
    "C64": (64, "<c8"),
    "F64": (64, "<f8"),
    "I64": (64, "<i8"),
    "U64": (64, "<u8"),
}
_TORCH_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
}


class ShmError(Exception):
    """Base class of every error this module raises."""


class UnknownModel(ShmError):
    """No model of that name was ever staged in the directory."""


class ModelNotReady(ShmError):
    """The model is known (the sidecar is loading it) but not published yet."""

    def __init__(self, message: str, state: str = "loading", reason: str = "", exit_code: int = 0) -> None:
        super().__init__(message)
        self.state = state
        self.reason = reason
        self.exit_code = exit_code


class ModelLoadFailed(ModelNotReady):
    """The sidecar tried to load the model and failed; ``reason`` and ``exit_code`` say why."""


class ManifestError(ShmError):
    """The manifest or the region does not hold together (damaged or foreign files)."""


class FingerprintMismatch(ShmError):
    """The staged model is not the one expected (or its source changed since staging)."""


class CudaUnavailable(ShmError):
    """``pin=True`` needs the CUDA runtime and a GPU."""


class TensorInfo(NamedTuple):
    """Where one tensor lies in the region (a NamedTuple: cheap to build by the hundreds)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class SourceFingerprint:
    uri: str
    size: int
    version: str
    sample_sha256: str

    def line(self) -> str:
        return f"{self.uri}\t{self.size}\t{self.version}\t{self.sample_sha256}\n"


@dataclass(frozen=True)
class Manifest:
    name: str
    uri: str
    region_file: str
    region_bytes: int
    alignment: int
    generation: str
    fingerprint: str
    sources: tuple[SourceFingerprint, ...]
    metadata: Mapping[str, str]
    tensors: tuple[TensorInfo, ...]
    stage_seconds: float
    created_unix_ms: int


def model_fingerprint(sources: tuple[SourceFingerprint, ...] | list[SourceFingerprint]) -> str:
    """The model fingerprint the sidecar records: SHA-256 over one line per shard."""
    digest = hashlib.sha256("".join(s.line() for s in sources).encode())
    return "sha256:" + digest.hexdigest()


def _is_valid_name(name: str) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    return (
        0 < len(name) <= 128
        and name[0].isascii()
        and name[0].isalnum()
        and set(name) <= ok
        and ".." not in name
    )


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest: field {key!r} is missing or has the wrong type")
    return value


def _uint(obj: Mapping[str, Any], key: str) -> int:
    value = _field(obj, key, int)
    if isinstance(value, bool) or value < 0:
        raise ManifestError(f"manifest: field {key!r} must be an integer >= 0")
    return int(value)


def parse_manifest(text: str | bytes) -> Manifest:
    """Parses and validates a manifest exactly as strictly as the sidecar does."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ManifestError("manifest is not a JSON object")
    if raw.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"unsupported manifest format {raw.get('format')!r} (expected {MANIFEST_FORMAT})")
    name = _field(raw, "name", str)
    if not _is_valid_name(name):
        raise ManifestError(f"manifest: invalid model name {name!r}")
    generation = _field(raw, "generation", str)
    if not generation or any(c not in "0123456789abcdef" for c in generation):
        raise ManifestError("manifest: generation must be lower-case hex")
    region_file = _field(raw, "region_file", str)
    if region_file != f"{name}.{generation}.region":
        raise ManifestError(f"manifest: region_file {region_file!r} does not belong to model {name!r}")
    region_bytes = _uint(raw, "region_bytes")
    alignment = _uint(raw, "alignment")
    if alignment < 256 or alignment > 1 << 30 or alignment & (alignment - 1):
        raise ManifestError(f"manifest: bad alignment {alignment}")
    if region_bytes % 4096:
        raise ManifestError("manifest: region_bytes is not a multiple of 4096")
    sources = []
    for s in _field(raw, "sources", list):
        if not isinstance(s, dict):
            raise ManifestError("manifest: sources entries must be objects")
        sources.append(
            SourceFingerprint(
                _field(s, "uri", str),
                _uint(s, "size"),
                _field(s, "version", str),
                _field(s, "sample_sha256", str),
            )
        )
    if not sources:
        raise ManifestError("manifest: no sources")
    fingerprint = _field(raw, "fingerprint", str)
    if fingerprint != model_fingerprint(sources):
        raise ManifestError("manifest: fingerprint does not match its sources")
    metadata = _field(raw, "metadata", dict)
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ManifestError("manifest: metadata values must be strings")
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for t in _field(raw, "tensors", list):
        # The hot loop of open_model: plain checks, no helper calls on the success path.
        try:
            tname, dtype, shape_raw, offset, nbytes = (
                t["name"],
                t["dtype"],
                t["shape"],
                t["offset"],
                t["nbytes"],
            )
        except (TypeError, KeyError):
            raise ManifestError(
                "manifest: tensors entries must be objects with name, dtype, shape, offset, nbytes"
            ) from None
        if (
            type(tname) is not str
            or type(shape_raw) is not list
            or type(offset) is not int
            or type(nbytes) is not int
        ):
            raise ManifestError(f"manifest: tensor {tname!r} has a field of the wrong type")
        width = _DTYPES.get(dtype) if type(dtype) is str else None
        if width is None:
            raise ManifestError(f"manifest: tensor {tname!r} has unknown dtype {dtype!r}")
        bits = width[0]
        for d in shape_raw:
            if type(d) is not int or d < 0:
                raise ManifestError(f"manifest: tensor {tname!r} has a bad shape")
            bits *= d
        if bits % 8 or bits // 8 != nbytes:
            raise ManifestError(f"manifest: tensor {tname!r}: nbytes does not match dtype and shape")
        if offset < 0 or offset % alignment or offset + nbytes > region_bytes:
            raise ManifestError(f"manifest: tensor {tname!r} is misaligned or lies outside the region")
        if tname in seen:
            raise ManifestError(f"manifest: tensor {tname!r} is listed twice")
        seen.add(tname)
        tensors.append(TensorInfo(tname, dtype, tuple(shape_raw), offset, nbytes))
    by_offset = sorted(tensors, key=lambda x: x.offset)
    for a, b in itertools.pairwise(by_offset):
        if a.offset + a.nbytes > b.offset:
            raise ManifestError(f"manifest: tensors {a.name!r} and {b.name!r} overlap")
    created = _field(raw, "created_unix_ms", int)
    return Manifest(
        name=name,
        uri=_field(raw, "uri", str),
        region_file=region_file,
        region_bytes=region_bytes,
        alignment=alignment,
        generation=generation,
        fingerprint=fingerprint,
        sources=tuple(sources),
        metadata=dict(metadata),
        tensors=tuple(tensors),
        stage_seconds=float(_field(raw, "stage_seconds", (int, float))),
        created_unix_ms=int(created),
    )


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return None if "://" in uri else uri


def source_fingerprint(uri: str) -> SourceFingerprint:
    """Recomputes a local source's fingerprint the way the sidecar does: size, mtime and a
    SHA-256 over the header plus three 64 KiB samples of the data (start, middle, end)."""
    path = _local_path(uri)
    if path is None:
        raise ShmError(f"cannot fingerprint {uri!r} locally: only local files can be verified")
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        head = f.read(8)
        if len(head) < 8:
            raise FingerprintMismatch(f"{uri} is no longer a safetensors file")
        data_offset = min(size, 8 + struct.unpack("<Q", head)[0])
        ranges = [(0, data_offset)] if data_offset else []
        data = size - data_offset
        s = _SAMPLE_BYTES
        if 0 < data <= 3 * s:
            ranges.append((data_offset, data))
        elif data > 3 * s:
            ranges += [(data_offset, s), (data_offset + (data - s) // 2, s), (size - s, s)]
        h = hashlib.sha256()
        for off, n in ranges:
            h.update(os.pread(f.fileno(), n, off))
    return SourceFingerprint(uri, size, f"mtime_ns:{st.st_mtime_ns}", h.hexdigest())


def _numpy_view(base: npt.NDArray[np.uint8] | None, t: TensorInfo) -> npt.NDArray[Any]:
    np_dtype = _DTYPES[t.dtype][1]
    if np_dtype is None:  # packed sub-byte types: raw bytes
        shape: tuple[int, ...] = (t.nbytes,)
        np_dtype = "uint8"
    else:
        shape = t.shape
    if base is None or t.nbytes == 0:
        empty = np.zeros(shape, dtype=np_dtype)
        empty.flags.writeable = False
        return empty
    return base[t.offset : t.offset + t.nbytes].view(np_dtype).reshape(shape)


class _Cuda:
    """cudaHostRegister / cudaHostUnregister through torch's cudart binding or libcudart."""

    def __init__(self) -> None:
        self._torch_cudart: Any = None
        self._lib: Any = None
        try:
            import torch as _torch

            torch_cuda: Any = _torch.cuda  # typed loosely: cudart() is untyped in some versions
            if torch_cuda.is_available():
                self._torch_cudart = torch_cuda.cudart()
        except ImportError:
            pass
        if self._torch_cudart is None:
            for name in (
                ctypes.util.find_library("cudart"),
                "libcudart.so",
                "libcudart.so.12",
                "libcudart.so.11.0",
            ):
                if not name:
                    continue
                try:
                    self._lib = ctypes.CDLL(name)
                    break
                except OSError:
                    continue
        if self._torch_cudart is None and self._lib is None:
            raise CudaUnavailable(
                "pin=True needs the CUDA runtime: install torch with CUDA or make libcudart.so loadable, "
                "and run on a machine with an NVIDIA GPU (or drop pin=True)"
            )

    def register(self, address: int, size: int) -> None:
        flags = _CUDA_HOST_REGISTER_PORTABLE | _CUDA_HOST_REGISTER_READ_ONLY
        if self._torch_cudart is not None:
            rc = int(self._torch_cudart.cudaHostRegister(address, size, flags))
        else:
            fn = self._lib.cudaHostRegister
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
            rc = int(fn(ctypes.c_void_p(address), ctypes.c_size_t(size), ctypes.c_uint(flags)))
        if rc != 0:
            raise CudaUnavailable(
                f"cudaHostRegister of {size} bytes failed with CUDA error {rc} (is a GPU visible?)"
            )

    def unregister(self, address: int) -> None:
        if self._torch_cudart is not None:
            self._torch_cudart.cudaHostUnregister(address)
        else:
            fn = self._lib.cudaHostUnregister
            fn.argtypes = [ctypes.c_void_p]
            fn(ctypes.c_void_p(address))


class StagedModel(Mapping[str, npt.NDArray[Any]]):
    """A staged model mapped read-only. A mapping from tensor name to a numpy view; use as a
    context manager or call :meth:`close`. Views stay valid while referenced, even after close."""

    def __init__(self, directory: Path, manifest: Manifest, fd: int, populate: bool) -> None:
        self.directory = directory
        self.manifest = manifest
        self.region_path = directory / manifest.region_file
        self._tensors = {t.name: t for t in manifest.tensors}
        self._mmap: mmap.mmap | None = None
        self._base: npt.NDArray[np.uint8] | None = None
        self._cuda: _Cuda | None = None
        if manifest.region_bytes > 0:
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
            self._mmap = mmap.mmap(fd, manifest.region_bytes, flags=flags, prot=mmap.PROT_READ)
            self._base = np.frombuffer(self._mmap, dtype=np.uint8)

    # Mapping interface: name -> numpy view.
    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.manifest.metadata

    @property
    def nbytes(self) -> int:
        return self.manifest.region_bytes

    @property
    def pinned(self) -> bool:
        return self._cuda is not None

    @property
    def address(self) -> int:
        """Address of the mapping in this process (0 for an empty model)."""
        return 0 if self._base is None else int(self._base.ctypes.data)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"model {self.name!r} has no tensor {name!r}") from None

    def tensor(self, name: str) -> npt.NDArray[Any]:
        """A read-only numpy view of one tensor (no copy)."""
        return _numpy_view(self._base, self.info(name))

    def numpy(self) -> dict[str, npt.NDArray[Any]]:
        """Every tensor as a read-only numpy view."""
        return {name: _numpy_view(self._base, t) for name, t in self._tensors.items()}

    def as_torch(self, name: str | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """One tensor (or all, as a dict) as torch tensors sharing the mapping. Read-only
        memory: clone() before modifying in place."""
        import torch as _torch

        def convert(t: TensorInfo) -> _torch.Tensor:
            target = getattr(_torch, _TORCH_DTYPES.get(t.dtype, "uint8"), None)
            if t.nbytes == 0 and target is not None and t.dtype in _TORCH_DTYPES:
                return _torch.empty(t.shape, dtype=target)
            raw = _numpy_view(self._base, TensorInfo(t.name, "U8", (t.nbytes,), t.offset, t.nbytes))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "non-writable array": intended
                flat = _torch.from_numpy(raw)
            if target is None or t.dtype not in _TORCH_DTYPES:
                return flat
            return flat.view(target).reshape(t.shape)

        if name is not None:
            return convert(self.info(name))
        return {n: convert(t) for n, t in self._tensors.items()}

    def pin(self) -> None:
        """Registers the mapping with CUDA (cudaHostRegister, read-only + portable)."""
        if self._cuda is not None or self._base is None:
            return
        cuda = _Cuda()
        cuda.register(self.address, self.manifest.region_bytes)
        self._cuda = cuda

    def close(self) -> None:
        """Unpins and drops this object's reference to the mapping; views handed out keep it
        alive until they are garbage-collected."""
        if self._cuda is not None:
            self._cuda.unregister(self.address)
            self._cuda = None
        self._base = None
        if self._mmap is not None:
            with contextlib.suppress(BufferError):  # views still exported: the GC unmaps later
                self._mmap.close()
            self._mmap = None

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StagedModel({self.name!r}, tensors={len(self)}, bytes={self.nbytes}, pinned={self.pinned})"


def _directory(directory: str | os.PathLike[str] | None) -> Path:
    if directory is None:
        env = os.environ.get(ENV_MODEL_DIR)
        if not env:
            raise ShmError(f"no directory given and ${ENV_MODEL_DIR} is not set")
        directory = env
    path = Path(directory)
    if not path.is_dir():
        raise ShmError(f"model directory {path} does not exist (is ${ENV_MODEL_DIR} right?)")
    return path


def list_models(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the models published (ready) in the directory."""
    d = _directory(directory)
    return sorted(p.name[: -len(_MANIFEST_SUFFIX)] for p in d.glob("*" + _MANIFEST_SUFFIX))


def _not_published(d: Path, name: str) -> ShmError:
    try:
        state = json.loads((d / f"{name}.state.json").read_text())
    except (OSError, ValueError):
        state = None
    if isinstance(state, dict) and state.get("state") == "failed":
        reason = str(state.get("reason", "unknown reason"))
        code = int(state.get("exit_code", 1))
        return ModelLoadFailed(f"model {name!r} failed to load: {reason}", "failed", reason, code)
    if isinstance(state, dict) and state.get("state") == "loading":
        return ModelNotReady(f"model {name!r} is still being staged by the sidecar in {d}")
    return UnknownModel(f"no model {name!r} in {d}; published models: {list_models(d)}")


def open_model(
    name: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    pin: bool = False,
    expected_fingerprint: str | None = None,
    verify_source: bool = False,
    wait: float = 0.0,
    populate: bool = False,
) -> StagedModel:
    """Maps a staged model read-only.

    name, directory: default to ``$LOOM_MODEL_NAME`` and ``$LOOM_MODEL_DIR`` (with no name and
        exactly one published model, that one).
    pin: register the mapping with CUDA (raises :class:`CudaUnavailable` without a GPU).
    expected_fingerprint: raise :class:`FingerprintMismatch` unless the staged model has it.
    verify_source: recompute the fingerprint of every (local) source file and compare.
    wait: seconds to wait for a model that is still loading (0: fail at once).
    populate: fault the whole mapping in now (MAP_POPULATE) instead of on first touch.

    Raises :class:`UnknownModel`, :class:`ModelNotReady` (:class:`ModelLoadFailed` with the
    sidecar's reason), :class:`ManifestError`, :class:`FingerprintMismatch`.
    """
    d = _directory(directory)
    if name is None:
        name = os.environ.get(ENV_MODEL_NAME)
    if name is None:
        models = list_models(d)
        if len(models) != 1:
            raise ShmError(
                f"no model name given and ${ENV_MODEL_NAME} is not set; published models: {models}"
            )
        name = models[0]
    if not _is_valid_name(name):
        raise UnknownModel(f"{name!r} is not a valid model name")
    deadline = time.monotonic() + wait
    while True:
        try:
            text = (d / (name + _MANIFEST_SUFFIX)).read_bytes()
        except FileNotFoundError:
            err = _not_published(d, name)
            if isinstance(err, ModelLoadFailed) or time.monotonic() >= deadline:
                raise err from None
            time.sleep(_POLL_SECONDS)
            continue
        manifest = parse_manifest(text)
        if manifest.name != name:
            raise ManifestError(f"{name}{_MANIFEST_SUFFIX} describes model {manifest.name!r}")
        try:
            fd = os.open(d / manifest.region_file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Replaced between reading the manifest and opening the region: read it again.
            if time.monotonic() >= deadline + 1.0:
                raise ManifestError(f"region {manifest.region_file} of model {name!r} is missing") from None
            time.sleep(_POLL_SECONDS / 5)
            continue
        break
    try:
        size = os.fstat(fd).st_size
        if size != manifest.region_bytes:
            raise ManifestError(
                f"region {manifest.region_file} is {size} bytes but the manifest says {manifest.region_bytes}"
            )
        if expected_fingerprint is not None and expected_fingerprint != manifest.fingerprint:
            raise FingerprintMismatch(
                f"model {name!r} has fingerprint {manifest.fingerprint}, expected {expected_fingerprint}"
            )
        if verify_source:
            for recorded in manifest.sources:
                try:
                    current = source_fingerprint(recorded.uri)
                except FileNotFoundError:
                    raise FingerprintMismatch(
                        f"source {recorded.uri} of model {name!r} no longer exists"
                    ) from None
                if current != recorded:
                    raise FingerprintMismatch(
                        f"source {recorded.uri} of model {name!r} changed since it was staged"
                    )
        model = StagedModel(d, manifest, fd, populate)
    finally:
        os.close(fd)  # the mapping keeps the file alive
    if pin:
        try:
            model.pin()
        except BaseException:
            model.close()
            raise
    return model
