"""Daily rollups of the usage ledger, kept by the database as events land.

Four tables sum the ledger per tenant and UTC day: the usage summary's totals (by agent,
provider, channel and the provider that started the turn), the delivery attempts (by agent
and provider), and a histogram of successful calls' latencies (by provider, and by agent
and provider). The reports read whole days from them and only the partial days at a
range's edges from the ledger, instead of every event of the range.

Triggers on the two ledger tables add every inserted row to them, in the inserting
statement's transaction: a batch rolled back (a conflicting event) leaves them unchanged,
and a duplicate (ON CONFLICT DO NOTHING) is no inserted row, so it adds nothing. On
PostgreSQL they run once per statement over the rows it inserted (a transition table), as
one upsert per rollup table, its rows in key order so that concurrent batches lock shared
rows in one order; SQLite's triggers run per row. Whoever inserts into the ledger (any
version of the service during a rolling update, a bulk load) keeps them in step.

Row-level security as on the ledger. The services may read them and never change them
directly: the tenant role only reads; the system role, which writes the ledger, may insert
and update (the triggers run as the inserting role), never delete.

Existing events are added here (a backfill, as the system role: it sees every tenant) while
the ledger tables are locked against inserts (SHARE ROW EXCLUSIVE, until the migration
commits), so nothing recorded meanwhile is counted twice or missed; reads go on.

The latency bucket of a latency in nanoseconds keeps its 6 highest bits (values below 64
exactly): vocalbridge_billing.domain.latency_bucket, written out in SQL below.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE
from vocalbridge_common.migrations import enable_tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUB_BUCKET_BITS = 5  # domain.LATENCY_SUB_BUCKET_BITS when this migration was written
ROLLUPS = ("usage_daily_totals", "usage_daily_attempts", "usage_daily_latencies", "usage_daily_agent_latencies")
LEDGER = ("usage_events", "usage_attempts")


def latency_bucket_sql(value: str) -> str:
    """domain.latency_bucket as a portable SQL expression (integer shifts and comparisons)."""
    kept = SUB_BUCKET_BITS + 1
    branches = [f"WHEN {value} < {2**kept} THEN {value}"]
    for bits in range(kept + 1, 63):
        shift = bits - kept
        branches.append(f"WHEN {value} < {2**bits} THEN {shift << SUB_BUCKET_BITS} + ({value} >> {shift})")
    shift = 63 - kept
    return f"CASE {' '.join(branches)} ELSE {shift << SUB_BUCKET_BITS} + ({value} >> {shift}) END"


TOTALS = "turns, prompt_tokens, completion_tokens, audio_millis, tts_characters, cost_micros"
TOTALS_KEY = "tenant_id, day, agent_id, provider, channel, started_provider"
ATTEMPTS_KEY = "tenant_id, day, agent_id, provider"
LATENCY_KEY = "tenant_id, day, provider, bucket"
AGENT_LATENCY_KEY = "tenant_id, agent_id, day, provider, bucket"
CALLED = "outcome <> 'CIRCUIT_OPEN'"
FAILED = "outcome NOT IN ('CIRCUIT_OPEN', 'SUCCESS')"
SKIPPED = "outcome = 'CIRCUIT_OPEN'"


def _add(table: str, key: str, columns: str) -> str:
    """The conflict clause that adds a new row's sums to the stored row's."""
    sets = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in columns.split(", "))
    return f" ON CONFLICT ({key}) DO UPDATE SET {sets}"


def event_rollups(events: str, *, upsert: bool) -> list[str]:
    """INSERT … SELECT adding the rows of `events` (the ledger or a transition table of it)
    to the totals, grouped, in key order; `upsert`: added to rows already there."""
    sums = (
        "count(*), sum(prompt_tokens), sum(completion_tokens), sum(audio_millis), sum(tts_characters), sum(cost_micros)"
    )
    return [
        f"INSERT INTO usage_daily_totals AS r ({TOTALS_KEY}, {TOTALS}) "
        f"SELECT tenant_id, event_day, agent_id, provider, channel, started_provider, {sums} FROM {events} "
        "GROUP BY tenant_id, event_day, agent_id, provider, channel, started_provider ORDER BY 1, 2, 3, 4, 5, 6"
        + (_add("r", TOTALS_KEY, TOTALS) if upsert else "")
    ]


def attempt_rollups(attempts: str, day: str, *, upsert: bool) -> list[str]:
    """The same for the rows of `attempts`, whose UTC day is `day`: attempt counts and
    the latency histograms of successful calls."""
    bucket = latency_bucket_sql("latency_ns")
    successes = f"SELECT *, {day} AS day, {bucket} AS bucket FROM {attempts} WHERE outcome = 'SUCCESS'"
    return [
        f"INSERT INTO usage_daily_attempts AS r ({ATTEMPTS_KEY}, attempts, failed_attempts, circuit_open_skips) "
        f"SELECT tenant_id, day, agent_id, provider, sum(CASE WHEN {CALLED} THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN {FAILED} THEN 1 ELSE 0 END), sum(CASE WHEN {SKIPPED} THEN 1 ELSE 0 END) "
        f"FROM (SELECT *, {day} AS day FROM {attempts}) AS a "
        "GROUP BY tenant_id, day, agent_id, provider ORDER BY 1, 2, 3, 4"
        + (_add("r", ATTEMPTS_KEY, "attempts, failed_attempts, circuit_open_skips") if upsert else ""),
        f"INSERT INTO usage_daily_latencies AS r ({LATENCY_KEY}, calls) "
        f"SELECT tenant_id, day, provider, bucket, count(*) FROM ({successes}) AS a "
        "GROUP BY tenant_id, day, provider, bucket ORDER BY 1, 2, 3, 4"
        + (_add("r", LATENCY_KEY, "calls") if upsert else ""),
        f"INSERT INTO usage_daily_agent_latencies AS r ({AGENT_LATENCY_KEY}, calls) "
        f"SELECT tenant_id, agent_id, day, provider, bucket, count(*) FROM ({successes}) AS a "
        "GROUP BY tenant_id, agent_id, day, provider, bucket ORDER BY 1, 2, 3, 4, 5"
        + (_add("r", AGENT_LATENCY_KEY, "calls") if upsert else ""),
    ]


# PostgreSQL: the UTC day of an attempt's event time (its event's event_day: the same instant).
PG_ATTEMPT_DAY = "to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def sqlite_attempt_day(attempt: str) -> str:
    """SQLite keeps times as text: an attempt's day is its event's event_day."""
    return f"(SELECT e.event_day FROM usage_events AS e WHERE e.event_id = {attempt}.event_id)"


def _pg_trigger_function(name: str, statements: list[str]) -> str:
    body = ";\n  ".join(statements)
    # The tables are found in the schema they were created in, whatever the inserting
    # session's search_path (SET … FROM CURRENT: this migration's).
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
        f"BEGIN\n  {body};\n  RETURN NULL;\nEND\n$$"
    )


def _sqlite_row_statements() -> tuple[list[str], list[str]]:
    """The same sums per inserted row, for SQLite's row triggers."""
    totals = ", ".join(
        f"NEW.{column}"
        for column in ("prompt_tokens", "completion_tokens", "audio_millis", "tts_characters", "cost_micros")
    )
    day = sqlite_attempt_day("NEW")
    bucket = latency_bucket_sql("NEW.latency_ns")
    event = [
        f"INSERT INTO usage_daily_totals ({TOTALS_KEY}, {TOTALS}) "
        f"VALUES (NEW.tenant_id, NEW.event_day, NEW.agent_id, NEW.provider, NEW.channel, NEW.started_provider, "
        f"1, {totals})" + _add("usage_daily_totals", TOTALS_KEY, TOTALS)
    ]
    attempt = [
        f"INSERT INTO usage_daily_attempts ({ATTEMPTS_KEY}, attempts, failed_attempts, circuit_open_skips) "
        f"VALUES (NEW.tenant_id, {day}, NEW.agent_id, NEW.provider, "
        f"CASE WHEN NEW.{CALLED} THEN 1 ELSE 0 END, CASE WHEN NEW.{FAILED} THEN 1 ELSE 0 END, "
        f"CASE WHEN NEW.{SKIPPED} THEN 1 ELSE 0 END)"
        + _add("usage_daily_attempts", ATTEMPTS_KEY, "attempts, failed_attempts, circuit_open_skips"),
        # INSERT … SELECT … WHERE: SQLite wants a WHERE before an upsert clause.
        f"INSERT INTO usage_daily_latencies ({LATENCY_KEY}, calls) "
        f"SELECT NEW.tenant_id, {day}, NEW.provider, {bucket}, 1 WHERE NEW.outcome = 'SUCCESS'"
        + _add("usage_daily_latencies", LATENCY_KEY, "calls"),
        f"INSERT INTO usage_daily_agent_latencies ({AGENT_LATENCY_KEY}, calls) "
        f"SELECT NEW.tenant_id, NEW.agent_id, {day}, NEW.provider, {bucket}, 1 WHERE NEW.outcome = 'SUCCESS'"
        + _add("usage_daily_agent_latencies", AGENT_LATENCY_KEY, "calls"),
    ]
    return event, attempt


def _create_tables() -> None:
    def key() -> list[sa.Column[str]]:
        return [sa.Column("tenant_id", sa.String(40), nullable=False), sa.Column("day", sa.String(10), nullable=False)]

    def count(name: str) -> sa.Column[int]:
        return sa.Column(name, sa.BigInteger, nullable=False)

    op.create_table(
        "usage_daily_totals",
        *key(),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("started_provider", sa.String(64), nullable=False),
        *[count(name) for name in TOTALS.split(", ")],
        sa.PrimaryKeyConstraint(*TOTALS_KEY.split(", "), name="pk_usage_daily_totals"),
    )
    op.create_table(
        "usage_daily_attempts",
        *key(),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        count("attempts"),
        count("failed_attempts"),
        count("circuit_open_skips"),
        sa.PrimaryKeyConstraint(*ATTEMPTS_KEY.split(", "), name="pk_usage_daily_attempts"),
    )
    op.create_table(
        "usage_daily_latencies",
        *key(),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        count("calls"),
        sa.PrimaryKeyConstraint(*LATENCY_KEY.split(", "), name="pk_usage_daily_latencies"),
    )
    op.create_table(
        "usage_daily_agent_latencies",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        count("calls"),
        sa.PrimaryKeyConstraint(*AGENT_LATENCY_KEY.split(", "), name="pk_usage_daily_agent_latencies"),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # No ledger insert from here until this migration commits; those in flight finish first.
        op.execute(f"LOCK TABLE {', '.join(LEDGER)} IN SHARE ROW EXCLUSIVE MODE")
    _create_tables()
    for table in ROLLUPS:
        enable_tenant_rls(op, table)
        if postgres:
            op.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {APP_ROLE}")
            op.execute(f"REVOKE DELETE, TRUNCATE ON {table} FROM {SYSTEM_ROLE}")

    # The backfill, as the role that writes the ledger: it sees every tenant's rows (row-level
    # security is forced on the tables' owner too), and may write the rollups.
    if postgres:
        op.execute(f"SET LOCAL ROLE {SYSTEM_ROLE}")
    day = PG_ATTEMPT_DAY if postgres else sqlite_attempt_day("usage_attempts")
    for statement in event_rollups("usage_events", upsert=False) + attempt_rollups("usage_attempts", day, upsert=False):
        op.execute(statement)
    if postgres:
        op.execute("RESET ROLE")
        for table in ROLLUPS:
            op.execute(f"ANALYZE {table}")  # autovacuum may be off, or late: plan with the backfilled sizes

    if postgres:
        op.execute(_pg_trigger_function("roll_up_usage_events", event_rollups("new_events", upsert=True)))
        op.execute(
            _pg_trigger_function("roll_up_usage_attempts", attempt_rollups("new_attempts", PG_ATTEMPT_DAY, upsert=True))
        )
        for table, rows, function in (
            ("usage_events", "new_events", "roll_up_usage_events"),
            ("usage_attempts", "new_attempts", "roll_up_usage_attempts"),
        ):
            op.execute(
                f"CREATE TRIGGER roll_up AFTER INSERT ON {table} REFERENCING NEW TABLE AS {rows} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
    else:
        event, attempt = _sqlite_row_statements()
        for table, statements in (("usage_events", event), ("usage_attempts", attempt)):
            op.execute(
                f"CREATE TRIGGER {table}_roll_up AFTER INSERT ON {table} FOR EACH ROW BEGIN "
                + "; ".join(statements)
                + "; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER roll_up ON usage_attempts")
        op.execute("DROP TRIGGER roll_up ON usage_events")
        op.execute("DROP FUNCTION roll_up_usage_attempts()")
        op.execute("DROP FUNCTION roll_up_usage_events()")
    else:
        op.execute("DROP TRIGGER usage_attempts_roll_up")
        op.execute("DROP TRIGGER usage_events_roll_up")
    for table in reversed(ROLLUPS):
        op.drop_table(table)
