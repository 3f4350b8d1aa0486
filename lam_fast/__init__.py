"""lam_fast: latent action world models learned from unlabelled video.

Importing the package is cheap: nothing optional (triton, deepspeed, nvidia.dali, the compiled
extension ``lam_fast._C``) is imported here; each is loaded on first use by the code that needs it.
"""

from lam_fast._version import __version__
from lam_fast import ops

__all__ = ["__version__", "ops"]
