"""Data-parallel contrastive training with ``torch.distributed`` (chapter 18): the gathered CLIP loss, a training
script for ``torchrun``, checkpoints that resume.

* :func:`world` – this process's rank and the number of processes (0 and 1 outside ``torch.distributed``).
* :func:`gather_with_grad` – every rank's rows, concatenated, with gradients sent back to the rank they came from.
* :func:`local_clip_loss` – one rank's share of the CLIP loss of the global batch (open_clip's ``local_loss``).
* :func:`make_model`, :func:`make_data`, :func:`batch_indices` – the chapter 9 dual encoder and its data, the same
  on every rank.
* :func:`train` – the training loop, in one process or in each of several (``DistributedDataParallel``, gloo).
* :func:`main` – the command line: ``torchrun --standalone --nproc_per_node 2 -m mmutils.distributed --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import data, text
from .checks import check_instance, check_int, check_tensor
from .nn.encoders import ConvTower, DualEncoder, RNNTextEncoder
from .nn.losses import logit_scale_to_scale

__all__ = ["world", "gather_with_grad", "local_clip_loss", "make_model", "make_data", "batch_indices", "train",
           "main"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from ``torch.distributed`` when a process group is up, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands every rank the summed gradient of the rows it contributed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())  # every rank receives every rank's (B, D)
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(parts)  # (size * B, D), rank r's rows at r * B ...

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # (size * B, D): d(this rank's loss) / d(every row)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # d(sum of all ranks' losses) / d(every row)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]  # (B, D): the rows this rank sent


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) of every rank, in rank order, into (world_size * B, ...), keeping the gradient.

    ``torch.distributed.all_gather`` returns copies without a gradient: a rank's loss could not move the
    embeddings of another rank's examples. Here the backward pass all-reduces (sums) the gradient with respect to
    the gathered tensor and returns to each rank the slice of the rows it sent, so each example gets the gradient
    of the sum of every rank's loss, as ``torch.distributed.nn.functional.all_gather`` does (the
    ``gather_with_grad`` option of open_clip, Ilharco et al., 2021). Every rank must pass the same shape. Outside a
    process group, or with one process, ``x`` itself is returned.
    """
    check_tensor("x", x, dtype="float")
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def local_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, all_image_emb: torch.Tensor,
                    all_text_emb: torch.Tensor, logit_scale: torch.Tensor | float, rank: int = 0) -> torch.Tensor:
    """One rank's part of the CLIP loss (Radford et al., 2021) of a batch spread over several ranks.

    ``image_emb``, ``text_emb``: this rank's pairs (B, E); ``all_image_emb``, ``all_text_emb``: the pairs of every
    rank (W * B, E), in rank order (e.g. from :func:`gather_with_grad`), so that this rank's pair ``i`` sits at row
    ``rank * B + i``; ``logit_scale``: log of the inverse temperature, clamped as in CLIP
    (:func:`mmutils.nn.losses.logit_scale_to_scale`). This rank's B images are scored against all W * B texts and its
    B texts against all W * B images: logits (B, W * B) each, the target of row ``i`` in column ``rank * B + i``.
    The mean over the W ranks of these losses is :func:`mmutils.nn.losses.clip_loss` of the global batch, and no
    rank ever holds the (W B, W B) matrix (open_clip's ``local_loss``). With ``all_* = `` this rank's own pairs and
    ``rank = 0`` it is the CLIP loss of the local batch alone: B - 1 negatives instead of W B - 1. Returns a scalar.
    """
    check_tensor("image_emb", image_emb, 2, dtype="float")
    b, e = image_emb.shape
    check_tensor("text_emb", text_emb, 2, size={0: b, 1: e}, dtype="float")
    check_tensor("all_image_emb", all_image_emb, 2, size={1: e}, dtype="float")
    check_tensor("all_text_emb", all_text_emb, 2, size=dict(enumerate(all_image_emb.shape)), dtype="float")
    n = all_image_emb.shape[0]
    if n % b:
        raise ValueError(f"all_image_emb must hold a whole number of local batches of {b} rows, got {n} rows")
    check_int("rank", rank, min=0, max=n // b - 1)
    scale = logit_scale_to_scale(logit_scale)
    img, txt = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)  # (B, E)
    all_img, all_txt = F.normalize(all_image_emb, dim=1), F.normalize(all_text_emb, dim=1)  # (W B, E)
    targets = torch.arange(b, device=img.device) + rank * b  # this rank's pairs in the global batch
    image_to_text = F.cross_entropy((scale * img @ all_txt.t()).float(), targets)  # logits (B, W B)
    text_to_image = F.cross_entropy((scale * txt @ all_img.t()).float(), targets)  # logits (B, W B)
    return 0.5 * (image_to_text + text_to_image)


# -- The chapter 9 model and data ----------------------------------------------

MAX_LENGTH = 12  # [BOS] + the longest one-object caption (8 words) + [EOS], with room to spare


def make_model(vocab_size: int, seed: int = 0) -> DualEncoder:
    """The pooled dual encoder of chapter 9, with GroupNorm instead of BatchNorm in the image tower.

    Image tower: :class:`~mmutils.nn.encoders.ConvTower` (8, 16, 32) with max-pooling, region tokens (B, 16, 32)
    averaged; text tower: a bidirectional GRU -> (B, 64); a 64-d joint space. GroupNorm normalizes each image on
    its own: BatchNorm's statistics would come from each rank's B images, not the global batch, and two processes
    would no longer compute what one does. The weights follow ``seed``.
    """
    check_int("vocab_size", vocab_size, min=2)
    torch.manual_seed(check_int("seed", seed, min=0))
    tower = ConvTower(3, (8, 16, 32), max_pool=True, out_dim=32, norm="group")
    return DualEncoder(tower, RNNTextEncoder(vocab_size, dim=32, hidden=32), image_dim=32, text_dim=64,
                            embed_dim=64, pooling="mean")


def make_data(n: int, seed: int = 0) -> dict:
    """``n`` one-object ShapesWorld pairs (the training data of chapter 9), identical on every rank.

    Returns :func:`mmutils.data.make_caption_data`'s dict (``images`` (n, 3, 32, 32), ``input_ids`` and
    ``attention_mask`` (n, 12), ``captions``, ``scenes``) plus the ``tokenizer``.
    """
    tokenizer = text.train_tokenizer()
    out = data.make_caption_data(n, tokenizer=tokenizer, min_objects=1, max_objects=1, max_length=MAX_LENGTH,
                                 seed=seed)
    return {**out, "tokenizer": tokenizer}


def batch_indices(n: int, batch_size: int, step: int, seed: int = 0) -> torch.Tensor:
    """The global batch of ``step``: (batch_size,) row indices drawn with replacement from ``n``.

    A function of ``(seed, step)`` only, so a run resumed from a checkpoint sees the batches it would have seen.
    """
    generator = torch.Generator().manual_seed(1_000_003 * seed + step)
    return torch.randint(n, (batch_size,), generator=generator)


class _Embed(nn.Module):
    """Wraps a :class:`~mmutils.nn.encoders.DualEncoder` so that one forward call (the one DDP watches) returns the pair's
    embeddings and the logit scale's parameter."""

    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, images, ids, mask):
        return self.model.encode_image(images), self.model.encode_text(ids, mask), self.model.logit_scale


def train(*, out: str | os.PathLike, steps: int = 200, batch_size: int = 64, gather: bool = True, lr: float = 3e-3,
          seed: int = 0, n_train: int = 6000, checkpoint_at: int | None = None,
          resume: str | os.PathLike | None = None) -> dict:
    """Train :func:`make_model` on :func:`make_data` with the CLIP loss for ``steps`` steps of ``batch_size`` pairs.

    In a process group of W ranks (started by ``torchrun``) each rank takes its B = ``batch_size / W`` rows of the
    global batch (:func:`batch_indices`), the model is wrapped in ``DistributedDataParallel`` (which averages the
    gradients over the ranks) and the loss is :func:`local_clip_loss` against the gathered embeddings
    (``gather=True``), or against the rank's own B pairs only (``gather=False``). In one process it is plain
    training on the whole batch. AdamW at a constant ``lr``.

    ``checkpoint_at``: after that many steps rank 0 saves ``out/checkpoint.pt`` (model, optimizer, step) and every
    rank waits for it; ``resume``: a checkpoint to start from, loaded by every rank. Rank 0 writes
    ``out/history.json`` (the global loss of every step, the settings), ``out/grads_step0.pt`` (the averaged
    gradients of the first step taken, as a dict of tensors) and ``out/final.pt`` (the model's ``state_dict``).
    Returns the history dict.
    """
    rank, size = world()
    check_int("steps", steps, min=1)
    check_int("batch_size", batch_size, min=1)
    if batch_size % size:
        raise ValueError(f"batch_size must be divisible by the number of processes ({size}), got {batch_size}")
    check_instance("gather", gather, bool)
    if checkpoint_at is not None:
        check_int("checkpoint_at", checkpoint_at, min=1, max=steps - 1)
    out = Path(out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)  # rank 0 writes every file
    local = batch_size // size

    pairs = make_data(n_train, seed=seed)
    model = make_model(len(pairs["tokenizer"]), seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start = 0
    if resume is not None:
        state = torch.load(resume, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    embed = _Embed(model)
    step_fn = DistributedDataParallel(embed) if size > 1 else embed  # DDP: gradients all-reduced (averaged)

    losses = []
    for step in range(start, steps):
        rows = batch_indices(n_train, batch_size, step, seed)[rank * local:(rank + 1) * local]  # (B,)
        image_emb, text_emb, logit_scale = step_fn(pairs["images"][rows], pairs["input_ids"][rows],
                                                   pairs["attention_mask"][rows])  # (B, E), (B, E), ()
        if gather:
            all_image, all_text, me = gather_with_grad(image_emb), gather_with_grad(text_emb), rank  # (W B, E)
        else:
            all_image, all_text, me = image_emb, text_emb, 0  # this rank's B pairs only
        loss = local_clip_loss(image_emb, text_emb, all_image, all_text, logit_scale, me)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == start and rank == 0:
            torch.save({n: p.grad.clone() for n, p in model.named_parameters()}, out / "grads_step0.pt")
        optimizer.step()
        logged = loss.detach().clone()
        if size > 1:
            dist.all_reduce(logged)
            logged /= size  # the mean of the ranks' losses: the global batch's loss when gathering
        losses.append(logged.item())
        if checkpoint_at is not None and step + 1 == checkpoint_at:
            if rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1},
                           out / "checkpoint.pt")
            if size > 1:
                dist.barrier()  # nobody moves on before the file is complete
    history = {"loss": losses, "first_step": start, "steps": steps, "batch_size": batch_size,
               "processes": size, "gather": gather, "lr": lr, "seed": seed}
    if rank == 0:
        (out / "history.json").write_text(json.dumps(history))
        torch.save(model.state_dict(), out / "final.pt")
    return history


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`train`; under ``torchrun`` each process joins a gloo process group first."""
    parser = argparse.ArgumentParser(prog="python -m mmutils.distributed", description=train.__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for history.json, grads_step0.pt, final.pt")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split over the processes")
    parser.add_argument("--no-gather", action="store_true", help="each rank's loss sees its own pairs only")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--checkpoint-at", type=int, default=None)
    parser.add_argument("--resume", default=None, help="a checkpoint.pt to continue from")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per process
    launched = "RANK" in os.environ  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    if launched:
        dist.init_process_group("gloo")  # "nccl" on GPUs
    try:
        history = train(out=args.out, steps=args.steps, batch_size=args.batch_size, gather=not args.no_gather,
                        lr=args.lr, seed=args.seed, n_train=args.n_train, checkpoint_at=args.checkpoint_at,
                        resume=args.resume)
        if world()[0] == 0:
            print(f"{history['processes']} process(es), global batch {args.batch_size}, "
                  f"{'gathered' if history['gather'] else 'local'} negatives: loss {history['loss'][0]:.4f} at step "
                  f"{history['first_step'] + 1}, {history['loss'][-1]:.4f} at step {history['steps']}", flush=True)
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
