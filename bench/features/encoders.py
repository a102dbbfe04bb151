"""Why feast.py writes the protobuf wire format itself: the cost of encoding the same rows three ways.

`encoders.py FEATURES.parquet ROWS` (a child of features_bench.py). On the first ROWS rows of the
pipeline's output: (1) Feast's own materialization path before Redis (`_convert_arrow_to_proto`, then
`_redis_key`, `Timestamp.FromDatetime` and `SerializeToString` per value, as `online_write_batch` does);
(2) one generated `feast.types.Value` protobuf object per value (`Value_pb2`, upb), keys and timestamps
by Loom; (3) Loom's vectorized encoder (`FeastEncoder.encode`: the whole RESP of the EVALSHA arguments).
Checks that (2) and (3) give the same field values, prints one JSON line of microseconds per entity.
"""

from __future__ import annotations

import json
import sys
import time
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    import pyarrow.parquet as pq
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast import types as ft
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.utils import _convert_arrow_to_proto
    from google.protobuf.timestamp_pb2 import Timestamp

    from loom.api.featurepipeline import FeastLayout
    from loom.features import feast as F
    from loom.features import feast_wire as W

    path, rows = sys.argv[1], int(sys.argv[2])
    table = pq.read_table(path).slice(0, rows).combine_chunks()
    layout = FeastLayout(project="bench", featureView="user_stats")
    encoder = F.FeastEncoder(table.schema, ["user_id"], "event_time", layout)
    features = encoder.columns.features
    dtypes = {f.feast_dtype: getattr(ft, f.feast_dtype) for _, f in (*encoder.columns.entities, *features)}
    entity = Entity(name="user_id", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="user_stats",
        entities=[entity],
        schema=[Field(name=n, dtype=dtypes[f.feast_dtype]) for n, f in features],
        source=FileSource(name="s", path=path, timestamp_field="event_time"),
    )
    batch = table.to_batches(max_chunksize=len(table))[0]
    out: dict[str, float] = {"rows": float(len(table))}

    began = time.perf_counter()
    for key, values, ts, _ in _convert_arrow_to_proto(batch, view, {"user_id": ValueType.INT64}):
        _redis_key("bench", key, 3)
        stamp = Timestamp()
        stamp.FromDatetime(ts)
        stamp.SerializeToString()
        for value in values.values():
            value.SerializeToString()
    out["feast_materialization_us"] = (time.perf_counter() - began) / len(table) * 1e6

    began = time.perf_counter()
    protos = {}
    for name, field in features:
        column = batch.column(name).to_pylist()
        protos[name] = [b"" if v is None else Value(**{field.name: v}).SerializeToString() for v in column]
    F.entity_keys(batch, encoder.columns, "bench")
    W.timestamp_bytes(W.micros_floor(batch.column("event_time")))
    out["protobuf_per_value_us"] = (time.perf_counter() - began) / len(table) * 1e6

    began = time.perf_counter()
    for part in table.to_batches(max_chunksize=64 * 1024):
        encoder.encode(part)
    out["loom_vectorized_us"] = (time.perf_counter() - began) / len(table) * 1e6

    for name, field in features:
        ours = W.value_bytes(batch.column(name), field).to_pylist()
        theirs = protos[name]
        nan = [i for i, v in enumerate(ours) if v != theirs[i]]
        assert all(v != v for v in (batch.column(name)[i].as_py() for i in nan)), name  # only NaN differs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
