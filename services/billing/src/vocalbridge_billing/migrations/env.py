from vocalbridge_billing.models import BillingBase
from vocalbridge_common.migrations import run_alembic_env

run_alembic_env(BillingBase.metadata)
