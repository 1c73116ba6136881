"""`python -m vocalbridge_conversation [serve|migrate]`."""

import sys

from vocalbridge_common.runtime import service_main
from vocalbridge_conversation.config import ConversationSettings
from vocalbridge_conversation.server import MIGRATIONS_DIR, SCHEMA, create_server

sys.exit(
    service_main(
        settings_from_env=ConversationSettings.from_env,
        create_server=create_server,
        schema=SCHEMA,
        migrations_dir=MIGRATIONS_DIR,
    )
)
