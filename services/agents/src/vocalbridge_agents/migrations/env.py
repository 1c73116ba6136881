from vocalbridge_agents.models import AgentsBase
from vocalbridge_common.migrations import run_alembic_env

run_alembic_env(AgentsBase.metadata)
