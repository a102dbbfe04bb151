"""Differential test: `loom-sidecar inspect` must accept exactly the files the reference parser
(the `safetensors` package, i.e. the Rust crate) accepts. Replays the fuzz seed corpus and the
regression files, then a few thousand deterministic mutations of valid files."""

from __future__ import annotations

import json
import random
import struct
import subprocess
from pathlib import Path
from typing import Any

import safetensors

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "sidecar_native" / "fuzz"


def reference_accepts(data: bytes) -> tuple[bool, str]:
    try:
        deserialize: Any = safetensors.deserialize  # untyped in the binding's stubs
        deserialize(data)
    except Exception as e:  # the binding raises SafetensorError; anything else is a refusal too
        return False, str(e)
    return True, ""


def compare(binary: str, tmp_path: Path, cases: dict[str, bytes]) -> list[str]:
    """Writes the cases, runs one `inspect --json` over all, returns the disagreements."""
    paths = []
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(str(p))
    r = subprocess.run([binary, "inspect", "--json", *paths], capture_output=True, text=True, check=False)
    results = json.loads(r.stdout)
    assert len(results) == len(cases)
    mismatches = []
    for res in results:
        name = Path(res["file"]).name
        ok, why = reference_accepts(cases[name])
        if ok != res["ok"]:
            mismatches.append(
                f"{name}: reference {'accepts' if ok else 'refuses (' + why + ')'}, sidecar "
                f"{'accepts' if res['ok'] else 'refuses (' + res['error'] + ')'}"
            )
        elif not ok:
            assert res["exit_code"] == 2 and res["error"].startswith("invalid model: "), res
    return mismatches


def test_corpus_and_regressions_agree_with_the_reference(binary: str, tmp_path: Path) -> None:
    cases = {}
    for kind in ("corpus", "regressions"):
        for p in sorted((FUZZ / kind / "safetensors_fuzz").iterdir()):
            cases[f"{kind}-{p.name}"] = p.read_bytes()
    assert len(cases) > 60
    # The seeds are valid and the regression files invalid, per the reference itself.
    for name, data in cases.items():
        assert reference_accepts(data)[0] == name.startswith("corpus-"), name
    assert compare(binary, tmp_path, cases) == []


def _header(data: bytes) -> tuple[int, bytes, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return n, data[8 : 8 + n], data[8 + n :]


def _mutate_json(rng: random.Random, header: bytes, body: bytes) -> bytes:
    doc = json.loads(header)
    names = [k for k in doc if k != "__metadata__"]
    choice = rng.randrange(12)
    if names and choice < 9:
        t = doc[rng.choice(names)]
        if not isinstance(t, dict):  # the array form of a seed: turn it back into an object
            t = doc[names[0]] = {"dtype": t[0], "shape": t[1], "data_offsets": t[2]}
        if choice == 0:
            t["dtype"] = rng.choice(
                [
                    "F32",
                    "F16",
                    "BF16",
                    "F4",
                    "F6_E2M3",
                    "C64",
                    "F8_E8M0",
                    "F8_E4M3FNUZ",
                    "X",
                    "",
                    "u8",
                    5,
                    None,
                    {"U8": None},
                    {"F32": 1},
                ]
            )
        elif choice == 1 and t["shape"]:
            i = rng.randrange(len(t["shape"]))
            t["shape"][i] = rng.choice(
                [0, 1, t["shape"][i] + 1, t["shape"][i] * 2, -1, 1.0, 2**63, 2**64, "1"]
            )
        elif choice == 2:
            t["shape"] = t["shape"] + [rng.choice([1, 2, 0])]
        elif choice == 3:
            i = rng.randrange(2)
            t["data_offsets"][i] += rng.choice([-1, 1, 4, -4])
        elif choice == 4:
            t["data_offsets"] = rng.choice([[0], [0, 1, 2], [-0.0, 4], "0,4", None])
        elif choice == 5:
            del t[rng.choice(["dtype", "shape", "data_offsets"])]
        elif choice == 6:
            t["extra"] = rng.choice([1, [1, 2], {"a": None}, 1e300, "x"])
        elif choice == 7:
            doc[rng.choice(names)] = [t.get("dtype"), t.get("shape"), t.get("data_offsets")]
        else:
            doc[rng.choice(names)] = rng.choice([5, None, [], "x"])
    elif choice == 9:
        doc["__metadata__"] = rng.choice([{"a": "b"}, {"a": 1}, None, [], {"a": None}, "x"])
    elif choice == 10:
        body = body + b"\0" * rng.choice([1, 2, 8])
    else:
        body = body[: max(0, len(body) - rng.choice([1, 2, 8]))]
    text = json.dumps(doc).encode()
    return struct.pack("<Q", len(text)) + text + body


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    n, header, body = _header(data)
    b = bytearray(data)
    choice = rng.randrange(6)
    if choice == 0 and header:  # flip a byte of the header
        i = 8 + rng.randrange(len(header))
        b[i] = rng.choice(
            [0x00, 0x22, 0x5B, 0x5D, 0x7B, 0x7D, 0x2C, 0x3A, 0x80, 0xFF, 0xC3, 0x20, 0x5C, b[i] ^ 1]
        )
    elif choice == 1:  # header length off by a little
        b[:8] = struct.pack("<Q", max(0, n + rng.choice([-2, -1, 1, 2, 10**8, 10**8 + 1])))
    elif choice == 2 and header:  # insert a character into the header and fix up N
        i = rng.randrange(len(header) + 1)
        new = header[:i] + bytes([rng.choice(b' \t\n{}[]",:0-eE.\\u')]) + header[i:]
        return struct.pack("<Q", len(new)) + new + body
    elif choice == 3 and header:  # delete one character
        i = rng.randrange(len(header))
        new = header[:i] + header[i + 1 :]
        return struct.pack("<Q", len(new)) + new + body
    elif choice == 4:  # duplicate a key/value pair textually
        text = header.decode("utf-8", "replace")
        start = text.find('"', 1)
        end = text.find("},", start)
        if start > 0 and end > start:
            new = (text[: end + 2] + text[start : end + 2] + text[end + 2 :]).encode()
            return struct.pack("<Q", len(new)) + new + body
    else:
        return bytes(b[: rng.randrange(len(b) + 1)])
    return bytes(b)


def test_mutations_agree_with_the_reference(binary: str, tmp_path: Path) -> None:
    seeds = [p.read_bytes() for p in sorted((FUZZ / "corpus" / "safetensors_fuzz").iterdir())]
    rng = random.Random(20240611)
    cases: dict[str, bytes] = {}
    for i in range(1500):
        seed = rng.choice(seeds)
        _, header, body = _header(seed)
        json_level = i % 2 == 0 and header.strip()
        cases[f"case{i:04d}.bin"] = (
            _mutate_json(rng, header, body) if json_level else _mutate_bytes(rng, seed)
        )
    accepted = sum(reference_accepts(d)[0] for d in cases.values())
    assert 100 < accepted < len(cases) - 100, "mutations should produce both valid and invalid files"
    mismatches = compare(binary, tmp_path, cases)
    assert mismatches == [], "\n".join(mismatches[:20])
