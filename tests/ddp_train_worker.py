"""Worker for tests/test_ddp_training.py, started by torchrun: a tiny multi-task run, then each rank
saves its parameters so the test can compare ranks. The run's collectives are device-strict: the gloo
group declares device ``cuda``, so a collective handed a CPU tensor (which NCCL rejects) fails the run."""
import argparse
import os

import torch

import lzero_ext  # noqa: F401
from lzero_ext.distributed import strict_collectives
from lzero_ext.entry import train_scalezero
from zoo.atari.config.scalezero_multitask_config import build_configs

parser = argparse.ArgumentParser()
parser.add_argument("--exp", required=True)
parser.add_argument("--games", nargs="+", required=True)
parser.add_argument("--max-train-iter", type=int, default=3)
parser.add_argument("--dps-solved", help="run with DPS; this game is solved at once, the others never")
args = parser.parse_args()

configs = build_configs("smoke", games=args.games, exp_name=args.exp, cuda=False, dps=bool(args.dps_solved))
if args.dps_solved:
    targets = {game: (-1e9 if game == args.dps_solved else 1e9) for game in args.games}
    for main, _ in configs:
        main.policy.dps = dict(enabled=True, suite="atari", num_stages=4, min_stage0_iters=2, max_stage_iters=100,
                               rank=4, targets=targets)
        main.policy.update_per_collect = 2
try:
    with strict_collectives("cuda"):
        result = train_scalezero(configs, max_env_step=64, max_train_iter=args.max_train_iter, exp_name=args.exp,
                                 score_kind="atari", checkpoint_freq=2, progress=False)
except ValueError as error:
    print(f"RANK{os.environ['RANK']} ERROR: {error}", flush=True)
    raise SystemExit(3)
params = {k: v.detach().cpu() for k, v in result.policy._learn_model.state_dict().items()}
dps = result.summary.get("dps", {})
torch.save({"params": params, "train_iter": result.train_iter, "dps_stage": dps.get("stage"), "solved": dps.get("solved")},
           os.path.join(args.exp, f"params_rank{os.environ['RANK']}.pt"))
