"""ListVoices: the voices the engines reported when the service started (the same for every
tenant; the agents service checks an agent's voice against this list when it is saved)."""

from __future__ import annotations

from dataclasses import dataclass

from vocalbridge_common.pagination import Page, Paginator
from vocalbridge_voice.domain.voices import VoiceCatalogue, VoiceInfo
from vocalbridge_voice.service.speech import Speech


@dataclass(frozen=True)
class VoicePage:
    voices: Page[tuple[int, VoiceInfo]]  # each with its position in the catalogue
    catalogue: VoiceCatalogue


class VoiceListService:
    def __init__(self, speech: Speech, paginator: Paginator) -> None:
        self._speech = speech
        self._paginator = paginator

    def list_voices(self, page_size: int, page_token: str) -> VoicePage:
        catalogue = self._speech.catalogue
        # The catalogue is fixed while the process runs: a position is a stable page key.
        request = self._paginator.request("ListVoices", page_size, page_token)
        after = request.after_int()
        start = 0 if after is None else after + 1
        rows = list(enumerate(catalogue.voices))[start : start + request.fetch]
        return VoicePage(self._paginator.page(request, rows, key=lambda row: row[0]), catalogue)
