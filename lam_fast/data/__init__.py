"""Video data: sources, decoders (PyAV, OpenCV, DALI), clip datasets, tar shards, state-cache reading.

Knows no model: the state-cache writer (it runs the frozen encoder) is
:mod:`lam_fast.training.encode`, the command lines are in :mod:`lam_fast.cli.data`.
"""

from lam_fast.data.dataset import (
    BatchedClipLoader,
    ClipItem,
    VideoClipDataset,
    collate_clips,
    make_dataloader,
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
from lam_fast.data.sampling import ClipBatchSampler
from lam_fast.data.sources import VIDEO_EXTENSIONS, Source, resolve_sources
from lam_fast.data.video import (
    TarMember,
    VideoDecodeError,
    VideoInfo,
    VideoRecord,
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
    "Source",
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
    "VideoRecord",
    "collate_clips",
    "decode_clip",
    "fetch_samples",
    "make_dataloader",
    "probe_video",
    "resolve_sources",
]
