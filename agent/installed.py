"""What the device knows about the signed build in a slot, beyond its version.

A ROM build's release counter goes up with every release of one channel and model
(`wire.TargetCustom.release_counter`), so the agent keeps, per slot, the channel, model and
counter the installed build was signed with. `check_target` then refuses a target whose counter
is not above the running build's, when both count in the same sequence (same channel and model:
a tester who joins preview starts another sequence, and nothing compares across them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire import TargetCustom


@dataclass(frozen=True)
class InstalledRelease:
    """The signed channel, model and release counter of the build a slot holds."""

    channel: str
    model: str
    release_counter: int

    @classmethod
    def of(cls, rom: TargetCustom) -> InstalledRelease:
        return cls(channel=rom.channel, model=rom.model, release_counter=rom.release_counter)

    @property
    def counted(self) -> bool:
        """False for a build signed without a counter (0): nothing to compare with."""
        return self.release_counter > 0

    def same_sequence(self, rom: TargetCustom) -> bool:
        """True when `rom`'s counter continues this build's (same channel and model)."""
        return (rom.channel, rom.model) == (self.channel, self.model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "model": self.model,
            "release_counter": self.release_counter,
        }

    @classmethod
    def from_dict(cls, raw: object) -> InstalledRelease:
        """Strict decode; raises ValueError unless every field is there with its type."""
        if not isinstance(raw, dict):
            raise ValueError("an installed release is not an object")
        channel, model, counter = raw.get("channel"), raw.get("model"), raw.get("release_counter")
        if not isinstance(channel, str) or not isinstance(model, str):
            raise ValueError("an installed release needs a channel and a model")
        if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
            raise ValueError("an installed release counter must be a whole number >= 0")
        return cls(channel=channel, model=model, release_counter=counter)
