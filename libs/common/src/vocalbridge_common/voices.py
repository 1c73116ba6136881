"""The voices this gateway has installed, and how a requested voice resolves to one.

A voice is named `<engine>/<voice>` (`piper/en_US-joe-medium`, `espeak/en-us`), optionally
with a variant for engines that have them (`espeak/en-us+f3`); a bare `<voice>` is looked up
in the engines in order of preference, so `en-us` (the example in the contract) still works.
The catalogue comes from the engines themselves when the service starts, so a name is valid
exactly when this deployment can speak it. The agents service checks an agent's voice
against the same catalogue, as the voice service lists it (ListVoices), so a name is
accepted when an agent is saved exactly when a spoken turn can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vocalbridge_common.errors import FailedPrecondition, FieldViolation, invalid_fields
from vocalbridge_common.validation import Violations

DEFAULT_WORDS_PER_MINUTE = 175
MIN_WORDS_PER_MINUTE = 80
MAX_WORDS_PER_MINUTE = 450
MAX_VOICE_NAME = 50


@dataclass(frozen=True)
class VoiceInfo:
    """One installed voice of one text-to-speech engine."""

    engine: str
    name: str
    language: str

    @property
    def qualified_name(self) -> str:
        return f"{self.engine}/{self.name}"


@dataclass(frozen=True)
class VoiceChoice:
    """A resolved voice: what an engine needs to speak."""

    engine: str
    voice: str  # the engine's own name, with its variant (`en-us+f3`)
    words_per_minute: int

    @property
    def qualified_name(self) -> str:
        return f"{self.engine}/{self.voice}"


@dataclass(frozen=True)
class VoiceCatalogue:
    """Every voice of the enabled engines; `engines` in order of preference (the default's first)."""

    engines: tuple[str, ...]
    voices: tuple[VoiceInfo, ...]
    default_voice: str  # a qualified name, resolvable in this catalogue
    variants: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def find(self, engine: str, name: str) -> VoiceInfo | None:
        return next((v for v in self.voices if v.engine == engine and v.name == name), None)

    def examples(self, limit: int = 6) -> str:
        names = [self.default_voice, *(v.qualified_name for v in self.voices if v.qualified_name != self.default_voice)]
        return ", ".join(names[:limit])

    def lookup(self, requested: str) -> tuple[VoiceInfo, str] | str:
        """(voice, variant) for a requested name, or why it is not installed."""
        name = requested or self.default_voice
        base, _, variant = name.partition("+")
        if "/" in base:
            engine, _, voice_name = base.partition("/")
            candidates = [engine] if engine in self.engines else []
            if not candidates:
                return f"engine {engine!r} is not enabled here (enabled: {', '.join(self.engines)})"
        else:
            voice_name, candidates = base, list(self.engines)
        for engine in candidates:
            found = self.find(engine, voice_name)
            if found is None:
                continue
            if variant and variant not in self.variants.get(engine, frozenset()):
                return f"variant {variant!r} is not installed for {engine}"
            return found, variant
        return f"voice {name!r} is not installed (for example: {self.examples()})"

    def resolve(self, requested: str, words_per_minute: int, field_prefix: str = "") -> VoiceChoice:
        """The voice to speak with, or InvalidArgument with a violation per bad field."""
        problems = self.problems(requested, words_per_minute, field_prefix)
        if problems:
            raise invalid_fields(problems, reason="VOICE_NOT_INSTALLED" if _is_voice(problems) else "INVALID_ARGUMENT")
        return self._choice(requested, words_per_minute)

    def resolve_agent_voice(self, agent: str, requested: str, words_per_minute: int) -> VoiceChoice:
        """An agent's voice settings; settings this gateway cannot speak fail the turn before any
        speech-to-text or provider call (FAILED_PRECONDITION: fix the agent, not the request)."""
        problems = self.problems(requested, words_per_minute, "agent.voice.")
        if problems:
            summary = "; ".join(f"{p.field}: {p.description}" for p in problems)
            raise FailedPrecondition(
                f"the agent's voice settings cannot be spoken here: {summary}",
                reason="AGENT_VOICE_NOT_INSTALLED",
                metadata={"agent": agent},
                field_violations=problems,
            )
        return self._choice(requested, words_per_minute)

    def problems(self, requested: str, words_per_minute: int, field_prefix: str = "") -> list[FieldViolation]:
        violations = Violations()
        if len(requested) > MAX_VOICE_NAME:
            violations.add(field_prefix + "voice", f"must be at most {MAX_VOICE_NAME} characters")
        else:
            found = self.lookup(requested)
            if isinstance(found, str):
                violations.add(field_prefix + "voice", found)
        if words_per_minute != 0 and not MIN_WORDS_PER_MINUTE <= words_per_minute <= MAX_WORDS_PER_MINUTE:
            violations.add(
                field_prefix + "words_per_minute",
                f"must be 0 (the default, {DEFAULT_WORDS_PER_MINUTE}) or between "
                f"{MIN_WORDS_PER_MINUTE} and {MAX_WORDS_PER_MINUTE}",
            )
        return list(violations)

    def _choice(self, requested: str, words_per_minute: int) -> VoiceChoice:
        found = self.lookup(requested)
        assert not isinstance(found, str)  # checked by problems()
        voice, variant = found
        return VoiceChoice(
            engine=voice.engine,
            voice=voice.name + (f"+{variant}" if variant else ""),
            words_per_minute=words_per_minute or DEFAULT_WORDS_PER_MINUTE,
        )


def _is_voice(problems: list[FieldViolation]) -> bool:
    return any(p.field.endswith("voice") for p in problems)
