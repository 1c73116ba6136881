from vocalbridge_common.migrations import run_alembic_env
from vocalbridge_voice.models import VoiceBase

run_alembic_env(VoiceBase.metadata)
