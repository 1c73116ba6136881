from vocalbridge_auth.models import AuthBase
from vocalbridge_common.migrations import run_alembic_env

run_alembic_env(AuthBase.metadata)
