"""`python -m vocalbridge_voice [serve|migrate]`."""

import sys

from vocalbridge_common.runtime import service_main
from vocalbridge_voice.config import VoiceSettings
from vocalbridge_voice.server import MIGRATIONS_DIR, SCHEMA, create_server

if __name__ == "__main__":
    sys.exit(
        service_main(
            settings_from_env=VoiceSettings.from_env,
            create_server=create_server,
            schema=SCHEMA,
            migrations_dir=MIGRATIONS_DIR,
        )
    )
