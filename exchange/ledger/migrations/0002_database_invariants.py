"""The ledger's invariants, enforced by PostgreSQL itself.

- postings and transactions are append-only: UPDATE and DELETE are refused by triggers;
- each transaction's postings sum to zero per asset, checked at commit by a DEFERRABLE
  INITIALLY DEFERRED constraint trigger (so the legs may be inserted one by one);
- a posting's asset is its account's asset: composite foreign key (account_id, asset_id);
- amounts are non-zero and user balances non-negative: CHECK constraints from the models.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused (post a correcting transaction)',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER ledger_posting_append_only
    BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER ledger_transaction_append_only
    BEFORE UPDATE OR DELETE ON ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT asset_id, sum(amount) AS total INTO unbalanced
      FROM ledger_posting
     WHERE transaction_id = NEW.transaction_id
     GROUP BY asset_id
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings sum to %',
            NEW.transaction_id, unbalanced.asset_id, unbalanced.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_posting_balanced
    AFTER INSERT ON ledger_posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

ALTER TABLE ledger_posting
    ADD CONSTRAINT ledger_posting_asset_is_account_asset
    FOREIGN KEY (account_id, asset_id) REFERENCES ledger_account (id, asset_id);
"""

BACKWARD = """
ALTER TABLE ledger_posting DROP CONSTRAINT ledger_posting_asset_is_account_asset;
DROP TRIGGER ledger_posting_balanced ON ledger_posting;
DROP FUNCTION ledger_check_balanced();
DROP TRIGGER ledger_transaction_append_only ON ledger_transaction;
DROP TRIGGER ledger_posting_append_only ON ledger_posting;
DROP FUNCTION ledger_refuse_change();
"""


def _run(sql: str):
    def run(apps, schema_editor):
        # Straight to the cursor, without parameters: the SQL contains % format strings.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False)]
