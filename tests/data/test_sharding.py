"""Data-parallel sharding end to end: 2 ranks x 2 DataLoader workers decode one epoch of disjoint
clips that covers the dataset exactly once, and the next epoch draws new start times."""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from lam_fast.data import VideoClipDataset, make_dataloader

WORLD_SIZE, WORKERS, BATCH = 2, 2, 2


class WorkerTaggingDataset(VideoClipDataset):
    """Each item also says which DataLoader worker decoded it."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["worker"] = get_worker_info().id
        return item


def collate(items):
    return {
        "index": [item["index"] for item in items],
        "worker": [item["worker"] for item in items],
        "video": torch.stack([item["video"] for item in items]),
    }


def test_two_ranks_two_workers_cover_each_epoch_exactly_once(videos, read_frame_ids):
    # 4 videos of 3 s, clips of 4 frames at 4 fps: 3 slots each, 12 clips per epoch, so an epoch
    # is 3 steps of 2 ranks x 2 clips.
    paths = [videos[name] for name in ("h264_24", "h264_30", "faststart", "mpeg4_25")]
    dataset = WorkerTaggingDataset(paths, num_frames=4, fps=4.0, image_size=16, seed=11)
    clips = len(dataset)
    assert clips == 12
    steps_per_epoch = clips // (WORLD_SIZE * BATCH)
    seen = {rank: [] for rank in range(WORLD_SIZE)}
    for rank in range(WORLD_SIZE):
        loader = make_dataloader(dataset, batch_size=BATCH, seed=4, rank=rank, world_size=WORLD_SIZE,
                                 num_workers=WORKERS)
        loader.collate_fn = collate
        iterator = iter(loader)
        seen[rank] = [next(iterator) for _ in range(2 * steps_per_epoch)]
        del iterator
    for epoch in range(2):
        batches = {rank: seen[rank][epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
                   for rank in range(WORLD_SIZE)}
        indices = {rank: [i for b in batches[rank] for i in b["index"]] for rank in range(WORLD_SIZE)}
        assert not set(indices[0]) & set(indices[1])  # ranks are disjoint
        everything = sorted(indices[0] + indices[1])
        assert everything == list(range(epoch * clips, (epoch + 1) * clips))  # exactly once
        for rank in range(WORLD_SIZE):  # both workers of each rank decoded part of the epoch
            assert {w for b in batches[rank] for w in b["worker"]} == set(range(WORKERS))
        # The decoded clips are the (video, slot) grid once each: check through the frames shown.
        locations = set()
        for rank in range(WORLD_SIZE):
            for batch in batches[rank]:
                for index, clip in zip(batch["index"], batch["video"], strict=True):
                    info, start = dataset.clip_location(index)
                    slots = [i for i in range(clips) if dataset.clip_location(i)[0] == info]
                    slot = slots.index(index % clips)
                    locations.add((info.path, slot))
                    first = read_frame_ids(clip)[0]
                    assert abs(first / info.fps - start) <= 0.5 / info.fps + 1e-9
        assert len(locations) == clips
    starts = [dataset.clip_location(i)[1] for i in range(2 * clips)]
    assert starts[:clips] != starts[clips:]  # the second epoch draws new starts in the same slots
