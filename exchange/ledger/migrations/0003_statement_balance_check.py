"""Check postings once per INSERT statement instead of once per row.

0002 checked balance with a DEFERRABLE constraint trigger FOR EACH ROW: at commit PostgreSQL ran
one aggregate query per posting (five per settled trade), which was the largest part of the
engine runner's commit. The journal writes all the legs of a transaction in ONE statement (a
COPY of the batch), so the check now runs once per statement over its transition table: every
transaction that statement touched must sum to zero per asset, counting the postings it already
had. The rule is stricter than before: the legs of a transaction arrive in one statement (legs
added one statement at a time are refused at the first; legs appended later to an existing
transaction are refused unless they balance among themselves, as before).

The two foreign keys of a posting (to its transaction, and the composite (account, asset) to its
account) cost one lookup per row each, half of them queued to commit; the same statement-level
trigger now checks them with one join each (share-locking the accounts, as the foreign key
did), and a trigger on ``ledger_account`` refuses to
delete an account, or change its id or asset, while postings refer to it (what the foreign key
did on that side; transactions are append-only already).
"""

import django.db.models.deletion
from django.db import migrations, models

FORWARD = """
DROP TRIGGER ledger_posting_balanced ON ledger_posting;
DROP FUNCTION ledger_check_balanced();
ALTER TABLE ledger_posting DROP CONSTRAINT ledger_posting_asset_is_account_asset;

-- The planner knows nothing of a transition table, and a young ledger may have no statistics:
-- lookups by index, always (a scan of the ledger per statement would grow with the ledger).
CREATE FUNCTION ledger_check_postings_statement() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    ids bigint[];
    found_count bigint;
    problem record;
BEGIN
    ids := ARRAY(SELECT DISTINCT transaction_id FROM inserted_postings);
    SELECT count(*) INTO found_count FROM ledger_transaction WHERE id = ANY (ids);
    IF found_count <> cardinality(ids) THEN
        RAISE EXCEPTION 'ledger postings refer to a transaction that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- what a foreign key does: share-lock the referenced accounts, so that a concurrent
    -- DELETE or change of id or asset waits for this transaction (and then sees its postings)
    PERFORM 1 FROM ledger_account
      WHERE id = ANY (ARRAY(SELECT DISTINCT account_id FROM inserted_postings))
      FOR KEY SHARE;
    SELECT p.account_id, p.asset_id INTO problem
      FROM (SELECT DISTINCT account_id, asset_id FROM inserted_postings) p
     WHERE NOT EXISTS (
        SELECT 1 FROM ledger_account a WHERE a.id = p.account_id AND a.asset_id = p.asset_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger posting on account % in asset %: no such account in that asset',
            problem.account_id, problem.asset_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT p.transaction_id, p.asset_id, sum(p.amount) AS total INTO problem
      FROM ledger_posting p
     WHERE p.transaction_id = ANY (ids)
     GROUP BY p.transaction_id, p.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings sum to %',
            problem.transaction_id, problem.asset_id, problem.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_posting_checked
    AFTER INSERT ON ledger_posting
    REFERENCING NEW TABLE AS inserted_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_postings_statement();

CREATE FUNCTION ledger_account_keep_referenced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.asset_id <> OLD.asset_id)
       AND EXISTS (SELECT 1 FROM ledger_posting WHERE account_id = OLD.id) THEN
        RAISE EXCEPTION 'ledger account % has postings: % refused', OLD.id, TG_OP
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_account_keep_referenced
    BEFORE DELETE OR UPDATE OF id, asset_id ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_keep_referenced();
"""

BACKWARD = """
DROP TRIGGER ledger_account_keep_referenced ON ledger_account;
DROP FUNCTION ledger_account_keep_referenced();
DROP TRIGGER ledger_posting_checked ON ledger_posting;
DROP FUNCTION ledger_check_postings_statement();
ALTER TABLE ledger_posting
    ADD CONSTRAINT ledger_posting_asset_is_account_asset
    FOREIGN KEY (account_id, asset_id) REFERENCES ledger_account (id, asset_id);

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
"""


def _run(sql: str):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_database_invariants")]

    operations = [
        migrations.AlterField(
            model_name="posting",
            name="transaction",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="postings",
                to="ledger.ledgertransaction",
            ),
        ),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False),
    ]
