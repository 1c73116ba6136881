"""`python -m vocalbridge_agents [serve|migrate]`."""

import sys

from vocalbridge_agents.config import AgentsSettings
from vocalbridge_agents.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.runtime import service_main

sys.exit(
    service_main(
        settings_from_env=AgentsSettings.from_env,
        create_server=create_server,
        schema=SCHEMA,
        migrations_dir=MIGRATIONS_DIR,
    )
)
