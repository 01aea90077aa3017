"""``runtime.session`` as it was: :mod:`runtime.engine.session` holds the session now.

Kept so that ``from runtime.session import VideoSession, check_step_input`` (documented
before the runtime package was arranged into ``engine/`` and ``io/``) keeps working.
"""

from .engine.session import FrameResult, VideoSession, check_step_input

__all__ = ["FrameResult", "VideoSession", "check_step_input"]
