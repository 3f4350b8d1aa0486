"""Key/value cache for frame-by-frame rollouts with frame-causal attention."""

from __future__ import annotations

import torch


class KVCache:
    """Raw (un-rotated) keys and values of the frames seen so far, for one attention layer.

    Keys are stored before RoPE; the op rotates them by their absolute frame index, so a fused
    kernel can rotate in registers. With ``max_frames`` the buffers are allocated once and
    appending is a copy into place; without it, appending concatenates.
    """

    def __init__(self, max_frames: int | None = None):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.max_frames = max_frames
        self.num_frames = 0
        self.frame_tokens: int | None = None
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.frame_tokens is None else self.num_frames * self.frame_tokens

    def append(self, k: torch.Tensor, v: torch.Tensor, frame_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v: (B, H, T_new * N, D); return all cached keys and values (views)."""
        if self.frame_tokens is None:
            self.frame_tokens = frame_tokens
        elif frame_tokens != self.frame_tokens:
            raise ValueError(f"cache holds {self.frame_tokens} tokens per frame, got {frame_tokens}")
        new_frames = k.shape[-2] // frame_tokens
        if self._k is not None and (k.shape[:2] != self._k.shape[:2] or k.shape[-1] != self._k.shape[-1]):
            raise ValueError(f"cache holds (B, H, *, D) = {tuple(self._k.shape)}, got {tuple(k.shape)}")
        total = self.num_frames + new_frames
        if self.max_frames is None:
            self._k = k if self._k is None else torch.cat([self._k, k], dim=-2)
            self._v = v if self._v is None else torch.cat([self._v, v], dim=-2)
        else:
            if total > self.max_frames:
                raise ValueError(f"cache is full: {self.num_frames} + {new_frames} frames > max_frames={self.max_frames}")
            if self._k is None:
                b, h, _, d = k.shape
                shape = (b, h, self.max_frames * frame_tokens, d)
                self._k = k.new_empty(shape)
                self._v = v.new_empty(shape)
            start, stop = self.length, total * frame_tokens
            self._k[:, :, start:stop] = k
            self._v[:, :, start:stop] = v
        self.num_frames = total
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def repeat_batch(self, repeats: int) -> "KVCache":
        """A new cache whose batch entry b * repeats + r is a copy of this cache's entry b (for
        planning: one observed prefix, many candidate continuations). This cache is unchanged."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        out = KVCache(self.max_frames)
        out.num_frames, out.frame_tokens = self.num_frames, self.frame_tokens
        if self._k is not None:
            out._k = self._k.repeat_interleave(repeats, dim=0)
            out._v = self._v.repeat_interleave(repeats, dim=0)
        return out

    def reset(self) -> None:
        self.num_frames = 0
        if self.max_frames is None:
            self._k = self._v = None
