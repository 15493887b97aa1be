"""Dataset mixtures: weighted, infinite, sharded, reproducible sampling over LeRobot datasets.

The draw stream
    Global draw ``g = 0, 1, 2, ...`` picks a dataset with probability proportional to its weight
    (i.i.d., from a generator seeded by ``(seed, g // 4096)``). The k-th draw that lands on dataset
    ``d`` takes position ``k mod n_d`` of that dataset's epoch ``k // n_d`` permutation (seeded by
    ``(seed, d, epoch)``). So within one pass over a dataset no frame repeats, whoever draws it.

Sharding
    Micro-batch ``b`` of the whole job holds draws ``[b*B*W, (b+1)*B*W)``; rank ``r`` takes the
    slice ``[(b*W + r)*B, (b*W + r + 1)*B)``. Ranks therefore never share a draw, and DataLoader
    workers receive whole batches from the sampler, so they never share one either. A sample's
    augmentation is seeded by its global draw number, so the data do not depend on the worker count.

Resume
    The stream is a pure function of the seed and the position: the sampler restarts at the next
    unconsumed micro-batch (``start_batch``) and yields exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from ..config import XVLAConfig
from ..domains import check_domain_ids, dataset_domain
from ..processor import STATE_KEY, ObservationProcessor, check_action_width
from .config import ColorJitterConfig, DatasetConfig, TrainConfig
from .transforms import color_jitter, frames_for_horizon, resample_chunk

logger = logging.getLogger(__name__)

ACTION_KEY = "action"
BLOCK = 4096


# ---------------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    """One dataset of the mixture, opened and resolved against the model."""

    dataset: Any  # xvla.data.LeRobotDataset
    config: DatasetConfig
    domain_id: int
    domain_reason: str  # why this id: printed in the mixture table
    camera_map: dict[str, str]  # model camera key -> dataset camera key (only those the dataset has)
    state_key: str | None
    action_key: str
    horizon_s: float | None
    label: str
    skipped: dict[int, str] = field(default_factory=dict)  # episode -> why (--mixture.skip_bad_episodes)

    @property
    def size(self) -> int:
        return len(self.dataset)


def _dataset_api():
    try:
        from ..data import LeRobotDataset, LeRobotDatasetMeta, resolve_dataset_root
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "training needs the dataset reader: install the data extras (`pip install 'xvla[train]'`)"
        ) from exc
    return LeRobotDataset, LeRobotDatasetMeta, resolve_dataset_root


def dataset_camera_keys(meta) -> list[str]:
    return list(meta.camera_keys)


def model_camera_keys(
    policy_config: XVLAConfig, dataset_cfgs: list[DatasetConfig], metas: list[Any]
) -> list[str]:
    """Camera slots of the model, in order: the config's ``image_keys``, else the datasets' cameras."""
    if policy_config.image_keys:
        return list(policy_config.image_keys)
    keys: list[str] = []
    for cfg, meta in zip(dataset_cfgs, metas, strict=True):
        inverse = {v: k for k, v in cfg.keys.items()}
        for cam in dataset_camera_keys(meta):
            model_key = inverse.get(cam, cam)
            if model_key not in keys:
                keys.append(model_key)
    if not keys:
        raise ValueError("none of the datasets has a camera: X-VLA needs at least one image per sample")
    return keys


def dataset_root(cfg: DatasetConfig) -> Path:
    """The local folder of one dataset: ``root`` must exist; ``repo_id`` is fetched from the Hub."""
    if cfg.root and not Path(cfg.root).expanduser().is_dir():
        raise FileNotFoundError(
            f"dataset folder {cfg.root} does not exist: fix --dataset.root (or 'root' in the config file's "
            "mixture.datasets); for a Hugging Face dataset use --dataset.repo_id=owner/name"
        )
    _, _, resolve_dataset_root = _dataset_api()
    return resolve_dataset_root(cfg.root or cfg.repo_id, revision=cfg.revision)


def open_sources(train_cfg: TrainConfig, policy_config: XVLAConfig, camera_keys: list[str]) -> list[Source]:
    """Open every dataset of the run and resolve its keys, widths, action horizon and domain against the model."""
    LeRobotDataset, LeRobotDatasetMeta, _ = _dataset_api()
    sources = []
    for cfg in train_cfg.datasets():
        root = dataset_root(cfg)
        meta = LeRobotDatasetMeta(root)
        camera_map = _camera_map(cfg, meta, camera_keys)
        action_key, state_key = _action_and_state_keys(cfg, meta.features, policy_config)
        horizon = (
            cfg.action_horizon_s if cfg.action_horizon_s is not None else train_cfg.mixture.action_horizon_s
        )
        chunk = policy_config.chunk_size
        frames = frames_for_horizon(horizon, meta.fps, chunk) if horizon else chunk
        dataset = LeRobotDataset(
            root,
            chunk_size=frames,
            episodes=cfg.episodes,
            camera_keys=sorted(set(camera_map.values())),
            action_key=action_key,
            cache_frames=train_cfg.mixture.cache_frames,
        )
        skipped: dict[int, str] = {}
        if train_cfg.mixture.skip_bad_episodes:
            dataset, skipped = _without_bad_episodes(dataset, cfg.label)
        domain, why = _source_domain(cfg, root, policy_config, train_cfg.new_domain.id is not None)
        check_domain_ids(domain, policy_config.num_domains, f"dataset {cfg.label}: domain_id")
        if len(dataset) == 0:
            raise ValueError(f"dataset {cfg.label} has no frames (episodes={cfg.episodes})")
        sources.append(
            Source(
                dataset, cfg, int(domain), why, camera_map, state_key, action_key, horizon, cfg.label, skipped
            )
        )
    return sources


def _without_bad_episodes(dataset: Any, label: str) -> tuple[Any, dict[int, str]]:
    """The dataset without the episodes whose video does not decode, and those episodes with the reason."""
    LeRobotDataset, _, _ = _dataset_api()
    bad = dataset.unreadable_episodes()
    if not bad:
        return dataset, bad
    good = [e for e in dataset.episodes if e not in bad]
    if not good:
        raise ValueError(
            f"dataset {label}: no episode has a readable video (first failure: {next(iter(bad.values()))})"
        )
    kept = LeRobotDataset(
        dataset.root,
        chunk_size=dataset.chunk_size,
        episodes=good,
        camera_keys=dataset.camera_keys,
        action_key=dataset.action_key,
        cache_frames=dataset.cache_frames,
    )
    return kept, bad


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """A DataLoader worker's exception comes back with the worker's whole traceback as its message: the same
    type with the original one-line message (the CLI prints it as one line)."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if "in DataLoader worker process" not in text or marker not in text:
        return exc
    try:
        return type(exc)(text[text.rfind(marker) + len(marker) :].strip())
    except Exception:  # noqa: BLE001 - a type that takes other arguments: keep the original
        return exc


def _camera_map(cfg: DatasetConfig, meta, camera_keys: list[str]) -> dict[str, str]:
    """Model camera -> dataset camera (key maps go model key -> dataset key); the main view is required."""
    unknown = sorted(set(cfg.keys) - {*camera_keys, STATE_KEY, ACTION_KEY})
    if unknown:
        raise ValueError(
            f"dataset {cfg.label}: the key map names model keys {unknown} that this model does not have; model "
            f"keys are {[*camera_keys, STATE_KEY, ACTION_KEY]} (a key map goes model key -> dataset key)"
        )
    camera_map = {}
    for cam in camera_keys:
        src = cfg.keys.get(cam, cam)
        if src in meta.camera_keys:
            camera_map[cam] = src
        elif cam in cfg.keys:
            raise ValueError(
                f"dataset {cfg.label}: keys maps {cam!r} to {src!r}, but the dataset's cameras are "
                f"{meta.camera_keys}"
            )
    if camera_keys[0] not in camera_map:
        raise ValueError(
            f"dataset {cfg.label} has no camera for the model's main view {camera_keys[0]!r} (its cameras: "
            f"{meta.camera_keys}). Map one with keys: {{{camera_keys[0]!r}: '<dataset camera>'}}"
        )
    return camera_map


def _action_and_state_keys(
    cfg: DatasetConfig, features: dict, policy_config: XVLAConfig
) -> tuple[str, str | None]:
    """The dataset's action and state keys, checked against the model's action space and state width."""
    action_key = cfg.keys.get(ACTION_KEY, ACTION_KEY)
    if action_key not in features:
        raise ValueError(
            f"dataset {cfg.label} has no {action_key!r} feature (features: {sorted(features)}); map the "
            "action with keys: {'action': '<dataset key>'}"
        )
    check_action_width(
        policy_config, int(math.prod(features[action_key]["shape"])), where=f"dataset {cfg.label}"
    )
    if not policy_config.use_proprio:
        return action_key, None
    state_key = cfg.keys.get(STATE_KEY, STATE_KEY)
    if state_key not in features:
        raise ValueError(
            f"dataset {cfg.label} has no {state_key!r} feature but the policy uses proprioception; map "
            f"the state with keys: {{'observation.state': '<dataset key>'}} (features: {sorted(features)})"
        )
    width = int(np.prod(features[state_key]["shape"]))
    if width > policy_config.max_state_dim:
        raise ValueError(
            f"dataset {cfg.label}: {state_key!r} has {width} dims but the policy's max_state_dim is "
            f"{policy_config.max_state_dim}; set --policy.max_state_dim >= {width} (from scratch) or reduce the state"
        )
    return action_key, state_key


def _source_domain(cfg: DatasetConfig, root, policy_config: XVLAConfig, new_domain: bool) -> tuple[int, str]:
    """A dataset's domain id and why: explicit > Phase II's new domain > the dataset's metadata > checkpoint."""
    declared = dataset_domain(root)
    if cfg.domain_id is not None:
        return int(cfg.domain_id), "set in the dataset config (--dataset.domain_id)"
    if new_domain:
        return int(policy_config.domain_id), "the new domain of this run (--new_domain.id)"
    if declared is not None:
        return declared, "declared by the dataset (meta/xvla_sim.json)"
    return int(policy_config.domain_id), "the checkpoint's default domain"


# ---------------------------------------------------------------------------------------------- dataset
def _draw_seed(seed: int, draw: int) -> int:
    return int(
        np.random.SeedSequence([seed & 0xFFFFFFFF, 0xC010, draw]).generate_state(1, dtype=np.uint64)[0] >> 1
    )


class MixtureDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by ``(dataset index, frame index, global draw)`` triples.

    A sample is one raw observation under the model's keys: every camera slot (float [3, H, W] in
    [0, 1] at the dataset's size; ``None`` for a camera the dataset lacks), ``observation.state`` and
    ``action`` [chunk, dataset width] as recorded (resampled to the chunk when a horizon is set),
    ``action_is_pad``, ``task``, ``domain_id`` and ``mixture_index`` / ``sample_index`` / ``draw``
    (bookkeeping). The policy's processor turns samples into model inputs (:class:`Collator`).
    """

    def __init__(
        self,
        sources: list[Source],
        camera_keys: list[str],
        chunk_size: int,
        color_jitter_cfg: ColorJitterConfig | None = None,
        seed: int = 0,
    ):
        self.sources = sources
        self.camera_keys = list(camera_keys)
        self.chunk_size = int(chunk_size)
        self.jitter = color_jitter_cfg if color_jitter_cfg is not None and color_jitter_cfg.enable else None
        self.seed = int(seed)

    def __len__(self) -> int:
        return sum(s.size for s in self.sources)

    @property
    def sizes(self) -> list[int]:
        return [s.size for s in self.sources]

    def __getitem__(self, key) -> dict[str, Any]:
        d, idx, draw = (int(k) for k in key)
        source = self.sources[d]
        raw = source.dataset[idx]
        gen = torch.Generator().manual_seed(_draw_seed(self.seed, draw)) if self.jitter else None
        item: dict[str, Any] = {}
        for cam in self.camera_keys:
            src = source.camera_map.get(cam)
            img = None if src is None else raw[src].float()
            if img is not None and gen is not None:
                j = self.jitter
                img = color_jitter(img, gen, j.brightness, j.contrast, j.saturation, j.hue)
            item[cam] = img
        if source.state_key is not None:
            item[STATE_KEY] = torch.as_tensor(raw[source.state_key]).float().reshape(-1)

        actions = torch.as_tensor(raw[source.action_key]).float()
        if actions.dim() == 1:
            actions = actions.unsqueeze(-1)
        is_pad = raw.get(f"{source.action_key}_is_pad")
        if source.horizon_s:
            actions, is_pad = resample_chunk(
                actions, is_pad, source.dataset.fps, source.horizon_s, self.chunk_size
            )
        else:
            actions = actions[: self.chunk_size]
            is_pad = (
                is_pad[: self.chunk_size]
                if is_pad is not None
                else torch.zeros(len(actions), dtype=torch.bool)
            )
        item[ACTION_KEY] = actions
        item["action_is_pad"] = torch.as_tensor(is_pad, dtype=torch.bool)
        item["task"] = source.config.task if source.config.task is not None else raw.get("task", "")
        item["domain_id"] = torch.tensor(source.domain_id, dtype=torch.long)
        item["mixture_index"] = torch.tensor(d, dtype=torch.long)
        item["sample_index"] = torch.tensor(idx, dtype=torch.long)
        item["draw"] = torch.tensor(draw, dtype=torch.long)
        return item


# ---------------------------------------------------------------------------------------------- sampling
class DrawStream:
    """The global sequence of (dataset, frame) draws; sequential access is O(1) per draw."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("a mixture needs one weight per dataset and at least one dataset")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"every dataset of the mixture must have frames, got sizes {sizes}")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(w > 0):
            raise ValueError(f"mixture weights must be > 0, got {list(weights)}")
        self.sizes = [int(n) for n in sizes]
        self.probs = w / w.sum()
        self.seed = int(seed)
        self._reset()

    def _reset(self) -> None:
        self._block = -1
        self._counts = np.zeros(len(self.sizes), dtype=np.int64)  # draws per dataset before the block
        self._choices = np.zeros(0, dtype=np.int64)
        self._ks = np.zeros(0, dtype=np.int64)
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _choices_for(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xB10C, block])
        if len(self.sizes) == 1:
            return np.zeros(BLOCK, dtype=np.int64)
        return rng.choice(len(self.sizes), size=BLOCK, p=self.probs).astype(np.int64)

    def _goto(self, block: int) -> None:
        if block < self._block:
            self._reset()
        while self._block < block:
            if self._block >= 0:
                self._counts += np.bincount(self._choices, minlength=len(self.sizes))
            self._block += 1
            self._choices = self._choices_for(self._block)
            ks = np.empty(BLOCK, dtype=np.int64)
            for d in range(len(self.sizes)):
                m = self._choices == d
                ks[m] = self._counts[d] + np.arange(int(m.sum()))
            self._ks = ks

    def _perm(self, d: int, epoch: int) -> np.ndarray:
        cached = self._perms.get(d)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xDA7A, d, epoch])
            cached = (epoch, rng.permutation(self.sizes[d]))
            self._perms[d] = cached
        return cached[1]

    def draw(self, g: int) -> tuple[int, int]:
        self._goto(g // BLOCK)
        off = g % BLOCK
        d = int(self._choices[off])
        epoch, pos = divmod(int(self._ks[off]), self.sizes[d])
        return d, int(self._perm(d, epoch)[pos])

    def counts_before(self, g: int) -> list[int]:
        """Draws per dataset among the first ``g`` global draws."""
        self._goto(g // BLOCK)
        counts = self._counts + np.bincount(self._choices[: g % BLOCK], minlength=len(self.sizes))
        return counts.tolist()


class MixtureBatchSampler(torch.utils.data.Sampler):
    """Infinite batch sampler for one rank: lists of ``(dataset, frame, draw)`` triples."""

    def __init__(
        self,
        sizes: list[int],
        weights: list[float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is invalid for world_size {world_size}")
        self.sizes = list(sizes)
        self.weights = list(weights)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_batch = int(start_batch)

    def batch(self, b: int, stream: DrawStream | None = None) -> list[tuple[int, int, int]]:
        stream = stream or DrawStream(self.sizes, self.weights, self.seed)
        first = (b * self.world_size + self.rank) * self.batch_size
        return [(*stream.draw(g), g) for g in range(first, first + self.batch_size)]

    def __iter__(self):
        stream = DrawStream(self.sizes, self.weights, self.seed)
        b = self.start_batch
        while True:
            yield self.batch(b, stream)
            b += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len(loader)
        return 2**62

    # The state of a run is "how many micro-batches were consumed"; the rest is configuration.
    def state_dict(self, consumed_batches: int) -> dict[str, Any]:
        next_draw = consumed_batches * self.batch_size * self.world_size
        stream = DrawStream(self.sizes, self.weights, self.seed)
        return {
            "seed": self.seed,
            "sizes": self.sizes,
            "weights": self.weights,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "next_batch": int(consumed_batches),
            "next_draw": int(next_draw),
            "draws_per_dataset": stream.counts_before(next_draw),
        }

    @staticmethod
    def start_batch_from_state(
        state: dict[str, Any], batch_size: int, world_size: int, sizes, weights, seed
    ) -> int:
        if list(state["sizes"]) != list(sizes) or [float(w) for w in state["weights"]] != [
            float(w) for w in weights
        ]:
            logger.warning(
                "the datasets or weights changed since the checkpoint (sizes %s -> %s, weights %s -> %s): the "
                "sample stream continues at the same position but differs from the interrupted run",
                state["sizes"],
                list(sizes),
                state["weights"],
                list(weights),
            )
        if int(state["seed"]) != int(seed):
            logger.warning("the seed changed since the checkpoint (%s -> %s)", state["seed"], seed)
        if int(state["batch_size"]) == batch_size and int(state["world_size"]) == world_size:
            return int(state["next_batch"])
        logger.warning(
            "batch size x processes changed since the checkpoint (%s x %s -> %s x %s): continuing at draw %s",
            state["batch_size"],
            state["world_size"],
            batch_size,
            world_size,
            state["next_draw"],
        )
        return math.ceil(int(state["next_draw"]) / (batch_size * world_size))


# ---------------------------------------------------------------------------------------------- collate
BOOKKEEPING_KEYS = ("action_is_pad", "mixture_index", "sample_index", "draw")


class Collator:
    """Samples -> model inputs + action targets through the policy's processor (in the loader workers)."""

    def __init__(self, processor: ObservationProcessor):
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.processor.collate(items)
        for key in BOOKKEEPING_KEYS:
            batch[key] = default_collate([item[key] for item in items])
        return batch


def build_loader(
    dataset: MixtureDataset,
    sampler: MixtureBatchSampler,
    collate: Collator,
    num_workers: int,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # A private generator: creating the loader iterator must not consume the global torch RNG
        # (the model's noise and dropout draw from it, and resume restores it).
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def describe(sources: list[Source], camera_keys: list[str]) -> str:
    total_w = sum(s.config.weight for s in sources)
    lines = [f"{'dataset':<28}{'frames':>10}{'episodes':>10}{'weight':>9}{'domain':>8}  cameras"]
    for s in sources:
        cams = ", ".join(f"{m.split('.')[-1]}<-{d.split('.')[-1]}" for m, d in s.camera_map.items())
        lines.append(
            f"{s.label[:27]:<28}{s.size:>10,}{s.dataset.num_episodes:>10}{s.config.weight / total_w:>9.3f}"
            f"{s.domain_id:>8}  {cams}" + (f"  horizon {s.horizon_s}s" if s.horizon_s else "")
        )
    lines.append(f"model cameras: {camera_keys}")
    lines += [f"domain {s.domain_id} for {s.label}: {s.domain_reason}" for s in sources]
    for s in sources:
        if s.skipped:
            first, why = next(iter(s.skipped.items()))
            lines.append(
                f"dataset {s.label}: skipped {len(s.skipped)} of {len(s.skipped) + s.dataset.num_episodes} "
                f"episodes whose video does not decode ({sorted(s.skipped)}; episode {first}: {why})"
            )
    return "\n".join(lines)
