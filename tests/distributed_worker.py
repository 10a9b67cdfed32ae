"""Run under torchrun by tests/test_distributed.py: fit AMA data-parallel, dump what the test checks."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import anomalykit
from anomalykit import distributed as D
from anomalykit.data import make_split

out = Path(sys.argv[1])
assert D.init_from_env("cpu") and D.world_size() == 2
split = make_split("one-class", "digits", normal_class=0)
det = anomalykit.load_method("ama", epochs=1, batch_size=32, width=8, feature_dim=16, n_critic=2).fit(split.X_train)
flat = torch.cat([v.reshape(-1).double() for v in det.nets.state_dict().values()])
gathered = [torch.zeros_like(flat) for _ in range(D.world_size())]
dist.all_gather(gathered, flat)
scores = det.score_samples(split.X_test)

# the same rows from a memory-mapped .npy: each rank reads only its own shard
from anomalykit.lazy_rows import NpyRows  # noqa: E402

npy = out / "x_test.npy"
if D.rank() == 0:
    np.save(npy, split.X_test.numpy())
D.barrier()
read_rows = []


class CountingRows(NpyRows):
    def _read(self, rows):
        read_rows.extend(int(i) for i in rows)  # source positions, an index array per batch
        return super()._read(rows)


lazy_scores = det.score_samples(CountingRows(str(npy)))
(out / f"rows-read-{D.rank()}.json").write_text(json.dumps({"rows": read_rows, "shard": D.shard_bounds(split.X_test.shape[0]),
                                                           "lazy_scores": lazy_scores.tolist()}))
# training on lazy uint8 rows: each rank reads its own batches (and its shard of the training
# scores), and the model equals the one trained on the same array in memory
u8_train, u8_test = (split.X_train.numpy() * 15).astype(np.uint8), (split.X_test.numpy() * 15).astype(np.uint8)
npy_train = out / "x_train_u8.npy"
if D.rank() == 0:
    np.save(npy_train, u8_train)
D.barrier()
read_rows.clear()
small = dict(epochs=2, batch_size=32, width=8, feature_dim=16, n_critic=2)
in_memory = anomalykit.load_method("ama", **small).fit(u8_train)
lazy = anomalykit.load_method("ama", **small).fit(CountingRows(str(npy_train)))
(out / f"train-rows-read-{D.rank()}.json").write_text(json.dumps({
    "rows": read_rows, "n": len(u8_train), "epochs": small["epochs"],
    "same_scores": bool(np.array_equal(lazy.score_samples(u8_test), in_memory.score_samples(u8_test))),
}))
if D.rank() == 0:
    det.save(out / "model.pt")
    (out / "worker.json").write_text(json.dumps({
        "identical_weights": all(torch.equal(g, gathered[0]) for g in gathered),
        "r_mean": det.r_mean_, "r_std": det.r_std_, "scores": scores.tolist(),
    }))
assert D.shutdown()  # barrier, then the group and gloo's threads are freed before interpreter teardown
