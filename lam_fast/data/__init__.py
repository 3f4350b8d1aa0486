"""Video data: decoders (PyAV, OpenCV, DALI), clip datasets, tar shards, state caches, samplers."""

from lam_fast.data.dataset import (
    VIDEO_EXTENSIONS,
    BatchedClipLoader,
    ClipBatchSampler,
    ClipItem,
    VideoClipDataset,
    collate_clips,
    make_dataloader,
    resolve_sources,
)
from lam_fast.data.decoders import (
    DECODERS,
    ClipDecoder,
    ClipRequest,
    DecoderUnavailable,
    auto_decoder,
    decoder_status,
    make_decoder,
)
from lam_fast.data.samples import SAMPLE_CLIPS, fetch_samples
from lam_fast.data.video import (
    TarMember,
    VideoDecodeError,
    VideoInfo,
    decode_clip,
    frame_indices,
    probe_video,
    read_video_bytes,
)

__all__ = [
    "DECODERS",
    "SAMPLE_CLIPS",
    "VIDEO_EXTENSIONS",
    "BatchedClipLoader",
    "ClipDecoder",
    "ClipRequest",
    "DecoderUnavailable",
    "TarMember",
    "auto_decoder",
    "decoder_status",
    "frame_indices",
    "make_decoder",
    "read_video_bytes",
    "ClipBatchSampler",
    "ClipItem",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoInfo",
    "collate_clips",
    "decode_clip",
    "fetch_samples",
    "make_dataloader",
    "probe_video",
    "resolve_sources",
]
