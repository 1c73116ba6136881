"""`python -m vocalbridge_billing [serve|migrate]`."""

import sys

from vocalbridge_billing.config import BillingSettings
from vocalbridge_billing.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.runtime import service_main

sys.exit(
    service_main(
        settings_from_env=BillingSettings.from_env,
        create_server=create_server,
        schema=SCHEMA,
        migrations_dir=MIGRATIONS_DIR,
    )
)
