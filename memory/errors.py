"""The errors `memory` raises, under the one root in `skills.errors` (re-exported by `agent.errors`)."""

from skills.errors import UserError


class EpisodeNotFoundError(UserError, LookupError):
    """No episode with that id in the buffer."""
