"""Train the small checkpoint that notebook 01's Q(s, op) panel reads (`notebooks/data/panel_checkpoint.pt`).

The panel asks how a trained critic's Q(s, op) moves when the slots hold other blueprints. A fresh network's barely
moves (notebook 01 measures it), so the notebook needs a trained one, and one small enough to ship in the
repository: the full Phase 4 network's checkpoint is 43 MB (its weights alone 14.5 MB), so this one trains the same
architecture at 64 wide instead of 512 (`policy.feature_dim` and `policy.lstm_hidden_dim`, as the `tiny` preset
does) on `demo`'s world, with its q_op critic and default reward, for `--updates` updates.

    .venv/bin/python scripts/panel_checkpoint.py                 # 150 updates, a few minutes
    .venv/bin/python scripts/panel_checkpoint.py --updates 20 --out /tmp/panel.pt

The checkpoint is an ordinary training checkpoint (`esper_lab.agent.load_agent` reads it, weights-only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from esper_lab.config import preset  # noqa: E402
from esper_lab.rl.trainer import Trainer  # noqa: E402

OUT = REPO / "notebooks" / "data" / "panel_checkpoint.pt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cfg = preset("demo", seed=args.seed, updates=args.updates, checkpoint_every=args.updates,
                 snapshot_every=args.updates, **{"policy.feature_dim": 64, "policy.lstm_hidden_dim": 64,
                                                 "truth.every": 0})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "panel"
        records = Trainer(cfg, run_dir).run()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "checkpoint.pt", args.out)
    last = records[-1]
    print(f"{len(records)} updates; last: return {last['episode_return']:+.2f}, val_acc {last['val_acc']:.1f}; "
          f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
