"""`python -m vocalbridge_auth [serve|migrate]`."""

import sys

from vocalbridge_auth.config import AuthSettings
from vocalbridge_auth.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.runtime import service_main

sys.exit(
    service_main(
        settings_from_env=AuthSettings.from_env,
        create_server=create_server,
        schema=SCHEMA,
        migrations_dir=MIGRATIONS_DIR,
    )
)
