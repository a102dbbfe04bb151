#!/usr/bin/env python3
"""Writes the fuzz seed corpora (valid inputs) and regression inputs (invalid ones, each named
for the rule it breaks). Stdlib only; rerun after changing a case, commit the output.
The Python tests also replay these files against the reference parser (safetensors)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def st(header: str | bytes, data: bytes = b"") -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def valid_safetensors() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    out["empty.safetensors"] = st("{}")
    out["padded_header.safetensors"] = st("{}" + " " * 14)
    out["one_f32.safetensors"] = st(json.dumps({"a": tensor("F32", [2], 0, 8)}), bytes(range(8)))
    h = {
        "__metadata__": {"format": "pt", "note": "caf\u00e9"},
        "w": tensor("BF16", [2, 3], 0, 12),
        "b": tensor("F16", [3], 12, 18),
        "s": tensor("I64", [], 18, 26),
        "z": tensor("U8", [0, 4], 26, 26),
        "q": tensor("F4", [4], 26, 28),
        "c": tensor("C64", [1], 28, 36),
    }
    out["mixed.safetensors"] = st(json.dumps(h), bytes(36))
    every = {}
    off = 0
    widths = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
    for name, bits in widths.items():
        n = (8 * 4) // bits if (8 * 4) % bits == 0 else 16  # a whole number of bytes
        size = n * bits // 8
        every[name.lower()] = tensor(name, [n], off, off + size)
        off += size
    out["every_dtype.safetensors"] = st(json.dumps(every), bytes(off))
    out["array_form.safetensors"] = st('{"a":["F32",[1],[0,4]]}', bytes(4))
    out["enum_map_dtype.safetensors"] = st('{"a":{"dtype":{"U8":null},"shape":[2],"data_offsets":[0,2]}}', b"ab")
    out["duplicate_name_last_wins.safetensors"] = st(
        '{"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
        b"xy")
    out["metadata_null.safetensors"] = st('{"__metadata__":null}')
    out["unknown_fields_ignored.safetensors"] = st(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1,{"k":2.5}],"extra":null}}', b"z")
    deep = "[" * 125 + "]" * 125
    out["depth_127.safetensors"] = st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":%s}}' % deep, b"z")
    out["unordered_offsets.safetensors"] = st(json.dumps({"b": tensor("U8", [2], 2, 4), "a": tensor("U8", [2], 0, 2)}),
                                              b"abcd")
    out["escaped_names.safetensors"] = st('{"a\\u00e9\\n\\/":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    ext = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":%s}}'
    out["extra_tiny_float.safetensors"] = st(ext % "1e-400", b"z")
    out["extra_big_int.safetensors"] = st(ext % "123456789012345678901234567890", b"z")
    out["extra_negative.safetensors"] = st(ext % "-5", b"z")
    out["del_in_name.safetensors"] = st(b'{"a\x7f":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["noncharacter_in_name.safetensors"] = st('{"a\ufffe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'.encode(), b"z")
    out["surrogate_pair_escape.safetensors"] = st('{"a\\ud83d\\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["array_form_enum_map.safetensors"] = st('{"a":[{"U8":null},[],[0,1]]}', b"z")
    return out


def invalid_safetensors() -> dict[str, bytes]:
    one = json.dumps({"a": tensor("F32", [1], 0, 4)})
    out: dict[str, bytes] = {}
    out["too_small.bin"] = b"\x02\0\0\0\0\0\0"
    out["header_too_large.bin"] = struct.pack("<Q", 100_000_001) + b"{}"
    out["header_past_eof.bin"] = struct.pack("<Q", 50) + b"{}"
    out["header_len_u64_max.bin"] = b"\xff" * 8 + b"{}"
    out["invalid_utf8.bin"] = st(b'{"\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    out["surrogate_utf8.bin"] = st(b'{"\xed\xa0\x80":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    out["overlong_utf8.bin"] = st(b'{"\xc0\xaf":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    out["bom.bin"] = st(b"\xef\xbb\xbf" + one.encode(), bytes(4))
    out["invalid_json.bin"] = st('{"a":', bytes(4))
    out["trailing_json.bin"] = st(one + "x", bytes(4))
    out["nul_padding.bin"] = st("{}\0")
    out["not_object.bin"] = st("[]")
    out["unknown_dtype.bin"] = st(json.dumps({"a": tensor("F128", [1], 0, 16)}), bytes(16))
    out["lowercase_dtype.bin"] = st(json.dumps({"a": tensor("f32", [1], 0, 4)}), bytes(4))
    out["gap.bin"] = st(json.dumps({"a": tensor("F32", [1], 4, 8)}), bytes(8))
    out["overlap.bin"] = st(json.dumps({"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 2, 6)}), bytes(6))
    out["end_before_begin.bin"] = st(json.dumps({"a": tensor("U8", [0], 0, 0), "b": tensor("U8", [0], 4, 0)}), bytes(4))
    out["size_mismatch.bin"] = st(json.dumps({"a": tensor("F32", [2], 0, 4)}), bytes(4))
    out["shape_overflow.bin"] = st(json.dumps({"a": tensor("F32", [2**62, 4], 0, 4)}), bytes(4))
    out["bits_overflow.bin"] = st(json.dumps({"a": tensor("F64", [2**62], 0, 4)}), bytes(4))
    out["f4_odd.bin"] = st(json.dumps({"a": tensor("F4", [3], 0, 2)}), bytes(2))
    out["trailing_bytes.bin"] = st(one, bytes(5))
    out["truncated_data.bin"] = st(one, bytes(3))
    out["metadata_int_value.bin"] = st('{"__metadata__":{"a":1}}')
    out["metadata_array.bin"] = st('{"__metadata__":[]}')
    out["duplicate_metadata.bin"] = st('{"__metadata__":{},"__metadata__":{}}')
    out["duplicate_dtype_field.bin"] = st('{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    out["dtype_map_two_keys.bin"] = st('{"a":{"dtype":{"U8":null,"U8":null},"shape":[1],"data_offsets":[0,1]}}', b"z")
    out["dtype_map_value.bin"] = st('{"a":{"dtype":{"U8":[]},"shape":[1],"data_offsets":[0,1]}}', b"z")
    out["negative_zero_offset.bin"] = st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', bytes(4))
    out["float_offset.bin"] = st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}', bytes(4))
    out["exponent_shape.bin"] = st('{"a":{"dtype":"U8","shape":[1E2],"data_offsets":[0,100]}}', bytes(100))
    out["three_offsets.bin"] = st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}', bytes(4))
    out["missing_shape.bin"] = st('{"a":{"dtype":"F32","data_offsets":[0,4]}}', bytes(4))
    out["tensor_not_object.bin"] = st('{"a":5}')
    out["array_form_4.bin"] = st('{"a":["F32",[1],[0,4],1]}', bytes(4))
    out["invalid_in_first_duplicate.bin"] = st(
        '{"a":5,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["depth_128.bin"] = st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":%s}}' % ("[" * 126 + "]" * 126), b"z")
    out["lone_surrogate_escape.bin"] = st('{"a\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    out["big_int_shape.bin"] = st('{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', b"z")
    ext = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":%s}}'
    out["extra_float_out_of_range.bin"] = st(ext % "1e400", b"z")
    out["extra_negative_out_of_range.bin"] = st(ext % "-1e400", b"z")
    out["top_level_float_out_of_range.bin"] = st('{"__metadata__":{"a":"b"},"z":1e400}')
    out["nul_in_string.bin"] = st(b'{"a\x00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["nul_then_garbage.bin"] = st(b'{}\x00garbage')
    out["raw_tab_in_string.bin"] = st(b'{"a\t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["low_surrogate_escape.bin"] = st('{"a\\udc00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["two_high_surrogates.bin"] = st('{"a\\ud83d\\ud83d":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
    out["array_form_enum_map_two_keys.bin"] = st('{"a":[{"U8":null,"U8":null},[1],[0,1]]}', b"z")
    out["enum_map_unknown.bin"] = st('{"a":{"dtype":{"X":null},"shape":[1],"data_offsets":[0,1]}}', b"z")
    out["whitespace_only.bin"] = st("   ")
    out["empty_header.bin"] = st("")
    out["error_message_splits_utf8.bin"] = st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0\ufffd 2]}}'.encode(), b"ab")
    out["formfeed_whitespace.bin"] = st("{}\x0c")
    return out


def shard_indexes() -> tuple[dict[str, bytes], dict[str, bytes]]:
    good = {
        "two_shards.json": {"metadata": {"total_size": 8}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}},
        "one_shard.json": {"weight_map": {"x": "model.safetensors"}},
    }
    bad = {
        "traversal.json": {"weight_map": {"a": "../etc/passwd"}},
        "absolute.json": {"weight_map": {"a": "/etc/passwd"}},
        "empty_map.json": {"weight_map": {}},
        "not_string.json": {"weight_map": {"a": 1}},
        "no_weight_map.json": {"metadata": {}},
    }
    enc = lambda d: {k: json.dumps(v).encode() for k, v in d.items()}  # noqa: E731
    return enc(good), enc(bad)


def fingerprint(sources: list[dict[str, object]]) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s['uri']}\t{s['size']}\t{s['version']}\t{s['sample_sha256']}\n".encode())
    return "sha256:" + h.hexdigest()


def manifests() -> tuple[dict[str, bytes], dict[str, bytes]]:
    sources = [{"uri": "/models/m.safetensors", "size": 100, "version": "mtime_ns:1", "sample_sha256": "ab" * 32}]
    base = {
        "format": "loom-shm/1", "name": "m", "uri": "/models/m.safetensors", "region_file": "m.0123abcd.region",
        "region_bytes": 8192, "alignment": 4096, "generation": "0123abcd", "created_unix_ms": 1, "stage_seconds": 0.5,
        "fingerprint": fingerprint(sources), "sources": sources, "metadata": {"format": "pt"},
        "tensors": [{"name": "a", "dtype": "F32", "shape": [2, 2], "offset": 0, "nbytes": 16},
                    {"name": "b", "dtype": "F4", "shape": [2], "offset": 4096, "nbytes": 1}],
    }

    def variant(**changes: object) -> bytes:
        m = json.loads(json.dumps(base))
        m.update(changes)
        return json.dumps(m).encode()

    good = {"manifest.json": variant(), "no_tensors.json": variant(tensors=[])}
    t = base["tensors"]
    bad = {
        "outside_region.json": variant(tensors=[{**t[0], "offset": 8192}]),
        "overflow.json": variant(tensors=[{**t[0], "offset": 2**64 - 4096, "nbytes": 16}]),
        "misaligned.json": variant(tensors=[{**t[0], "offset": 100}]),
        "overlap.json": variant(tensors=[t[0], {**t[0], "name": "c"}]),
        "nbytes_mismatch.json": variant(tensors=[{**t[0], "nbytes": 15}]),
        "bad_fingerprint.json": variant(fingerprint="sha256:00"),
        "foreign_region.json": variant(region_file="../x.0123abcd.region"),
        "bad_name.json": variant(name="../m", region_file="../m.0123abcd.region"),
        "created_too_big.json": variant(created_unix_ms=2**63),
    }
    return good, bad


def write(dirpath: Path, files: dict[str, bytes]) -> None:
    dirpath.mkdir(parents=True, exist_ok=True)
    for old in dirpath.iterdir():
        old.unlink()
    for name, data in files.items():
        (dirpath / name).write_bytes(data)


def main() -> None:
    write(HERE / "corpus" / "safetensors_fuzz", valid_safetensors())
    write(HERE / "regressions" / "safetensors_fuzz", invalid_safetensors())
    good, bad = shard_indexes()
    write(HERE / "corpus" / "shard_index_fuzz", good)
    write(HERE / "regressions" / "shard_index_fuzz", bad)
    good, bad = manifests()
    write(HERE / "corpus" / "manifest_fuzz", good)
    write(HERE / "regressions" / "manifest_fuzz", bad)


if __name__ == "__main__":
    main()
