-- ledger.post_batch: post many commands in one round trip and one commit.
--
-- Commands are processed in array order, with the semantics of posting them
-- one after another: a command that would push an account past its limit is
-- declined and leaves no trace, and its neighbours are unaffected. All writes
-- are set-based (one INSERT per table, one UPDATE of accounts) after a
-- decision loop that runs over in-memory arrays of the locked accounts.
--
-- Inputs, one element per command (1-based):
--   p_key, p_hash       idempotency key and content hash
--   p_kind              transfer | hold | capture | void | expire | reverse
--   p_ref               reverse: the journal to reverse; capture/void/expire: the hold id
--   p_amount            capture: amount to capture (NULL = all of the hold)
--   p_timeout_s         hold: seconds until it may expire
--   p_meta              metadata (jsonb)
--   p_force             true: may take `guarded` accounts below zero (claw-backs)
--   p_guard             guard key, or NULL (the whole array NULL: nothing guarded). A command
--                       whose guard a journal already holds is a conflict with reason 'guard'
--                       (migration 0010 explains guards)
-- Legs, one element per transfer, hold or capture leg (a capture's: posted after the captured
-- leg, in the same journal), grouped by command in command order:
--   p_leg_cmd, p_leg_debit, p_leg_credit, p_leg_amount
--
-- Output, one row per command: idx, status (posted | exists | conflict |
-- declined | invalid), journal_id, detail (for people), reason (for code: on a
-- decline 'limit', 'inactive' or 'expired'; on a conflict 'guard' or NULL), and
-- for posted/exists the account and balance_after of each entry in leg order.

CREATE OR REPLACE FUNCTION ledger.post_batch(
    p_key text[], p_hash bytea[], p_kind text[], p_ref bigint[], p_amount bigint[],
    p_timeout_s integer[], p_meta jsonb[], p_force boolean[],
    p_leg_cmd integer[], p_leg_debit bigint[], p_leg_credit bigint[], p_leg_amount bigint[],
    p_guard text[] DEFAULT NULL)
RETURNS TABLE(idx integer, status text, journal_id bigint, business_date date, detail text,
              reason text, accounts bigint[], balances bigint[])
-- Runtime roles may not write journals, entries, holds or balances: this function does, as its
-- owner (`switchd db roles` makes that the owner role), with a search_path no caller can change.
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, ledger, loyalty, switch, eod, pg_temp AS $$
DECLARE
    n        integer := coalesce(array_length(p_key, 1), 0);
    nl       integer := coalesce(array_length(p_leg_cmd, 1), 0);
    v_date   date;
    st       text[];
    det      text[];
    why_code text[];
    jid      bigint[];
    jkind    text[];
    rev_of   bigint[];
    hold_of  bigint[];
    -- expanded legs: op 'post' | 'hold' | 'release'
    x_op     text[] := '{}';
    x_debit  bigint[] := '{}';
    x_credit bigint[] := '{}';
    x_amount bigint[] := '{}';
    x_first  integer[];
    x_last   integer[];
    -- locked accounts
    a_id     bigint[];
    a_asset  text[];
    a_credit boolean[];
    a_limit  text[];
    a_status text[];
    a_posted bigint[];
    a_held   bigint[];
    a_dirty  boolean[];
    -- entries to write
    e_journal bigint[] := '{}';
    e_leg     smallint[] := '{}';
    e_account bigint[] := '{}';
    e_asset   text[] := '{}';
    e_amount  bigint[] := '{}';
    e_balance bigint[] := '{}';
    e_first   integer[];
    e_last    integer[];
    -- holds to create / resolve
    h_id bigint[] := '{}'; h_debit bigint[] := '{}'; h_credit bigint[] := '{}';
    h_amount bigint[] := '{}'; h_timeout integer[] := '{}';
    r_id bigint[] := '{}'; r_state text[] := '{}'; r_by bigint[] := '{}';
    -- guard keys taken by commands posted in this batch
    has_guard boolean := p_guard IS NOT NULL;
    g_taken text[] := '{}';
    -- loop state
    i integer; j integer; k integer; kj bigint; kd integer; kc integer; leg integer; mark integer;
    amt bigint; nat bigint; was bigint; s integer; ok boolean; why text;
    snap_k integer[]; snap_p bigint[]; snap_h bigint[];
    r record;
    hold record;
    leg_lo integer := 1;
BEGIN
    IF n = 0 THEN RETURN; END IF;
    st := array_fill(NULL::text, ARRAY[n]);
    det := array_fill(NULL::text, ARRAY[n]);
    why_code := array_fill(NULL::text, ARRAY[n]);
    jid := array_fill(NULL::bigint, ARRAY[n]);
    jkind := array_fill(NULL::text, ARRAY[n]);
    rev_of := array_fill(NULL::bigint, ARRAY[n]);
    hold_of := array_fill(NULL::bigint, ARRAY[n]);
    x_first := array_fill(0, ARRAY[n]);
    x_last := array_fill(-1, ARRAY[n]);
    e_first := array_fill(0, ARRAY[n]);
    e_last := array_fill(-1, ARRAY[n]);

    -- The open business day; FOR SHARE makes a cut-over wait for this batch.
    SELECT b.open_date INTO v_date FROM ledger.business_day b WHERE b.singleton FOR SHARE;

    -- 1. Idempotency: a key seen before answers with the original, or a conflict.
    FOR r IN
        SELECT k.i, j.id, j.content_hash = p_hash[k.i] AS same
          FROM unnest(p_key) WITH ORDINALITY AS k(key, i)
          JOIN ledger.journals j ON j.idempotency_key = k.key
    LOOP
        IF r.same THEN
            st[r.i] := 'exists'; jid[r.i] := r.id;
        ELSE
            st[r.i] := 'conflict';
            det[r.i] := 'idempotency key ' || p_key[r.i] || ' was used before with different content';
        END IF;
    END LOOP;

    -- 1b. Guards: a command whose guard key a journal already holds is a conflict (reason
    --     'guard'): its writer decided on state that has changed since, and must read again.
    IF has_guard THEN
        FOR r IN
            SELECT k.i, j.id FROM unnest(p_guard) WITH ORDINALITY AS k(g, i)
              JOIN ledger.journals j ON j.guard_key = k.g
        LOOP
            IF st[r.i] IS NULL THEN
                st[r.i] := 'conflict'; why_code[r.i] := 'guard';
                det[r.i] := 'guard ' || p_guard[r.i] || ' was taken by journal ' || r.id;
            END IF;
        END LOOP;
    END IF;

    -- 2. Lock the holds this batch resolves, in id order (before accounts, always).
    PERFORM 1 FROM ledger.holds h
      WHERE h.id = ANY (SELECT p_ref[q] FROM generate_series(1, n) q WHERE p_kind[q] IN ('capture', 'void', 'expire'))
      ORDER BY h.id FOR UPDATE;

    -- 3. Expand every command into legs.
    FOR i IN 1..n LOOP
        x_first[i] := coalesce(array_length(x_op, 1), 0) + 1;
        IF st[i] IS NULL THEN
            CASE p_kind[i]
            WHEN 'transfer', 'hold' THEN
                jkind[i] := p_kind[i];
                WHILE leg_lo <= nl AND p_leg_cmd[leg_lo] < i LOOP leg_lo := leg_lo + 1; END LOOP;
                j := leg_lo;
                WHILE j <= nl AND p_leg_cmd[j] = i LOOP
                    x_op := x_op || CASE p_kind[i] WHEN 'hold' THEN 'hold' ELSE 'post' END;
                    x_debit := x_debit || p_leg_debit[j];
                    x_credit := x_credit || p_leg_credit[j];
                    x_amount := x_amount || p_leg_amount[j];
                    j := j + 1;
                END LOOP;
            WHEN 'reverse' THEN
                jkind[i] := 'reversal';
                SELECT jr.id INTO kj FROM ledger.journals jr WHERE jr.reverses_journal_id = p_ref[i];
                IF FOUND THEN
                    -- A second reverse of the same journal returns the first reversal.
                    st[i] := 'exists'; jid[i] := kj;
                    det[i] := 'journal ' || p_ref[i] || ' was already reversed by journal ' || kj;
                ELSE
                    SELECT jo.kind INTO why FROM ledger.journals jo WHERE jo.id = p_ref[i];
                    IF NOT FOUND THEN
                        st[i] := 'invalid'; det[i] := 'journal ' || p_ref[i] || ' does not exist';
                    ELSIF why NOT IN ('transfer', 'capture') THEN
                        st[i] := 'invalid';
                        det[i] := 'journal ' || p_ref[i] || ' is a ' || why || ' and cannot be reversed';
                    ELSIF p_ref[i] = ANY (rev_of) THEN
                        st[i] := 'conflict';
                        det[i] := 'journal ' || p_ref[i] || ' is reversed by another command in this batch';
                    ELSE
                        rev_of[i] := p_ref[i];
                        -- Entries come in pairs (odd leg = debit side, even leg = credit side);
                        -- the reversal swaps the sides.
                        FOR r IN
                            SELECT d.account_id AS debit_acc, c.account_id AS credit_acc, c.amount AS amount
                              FROM ledger.entries d
                              JOIN ledger.entries c ON c.journal_id = d.journal_id AND c.leg = d.leg + 1
                             WHERE d.journal_id = p_ref[i] AND d.leg % 2 = 1
                             ORDER BY d.leg
                        LOOP
                            x_op := x_op || 'post'::text;
                            x_debit := x_debit || r.credit_acc;
                            x_credit := x_credit || r.debit_acc;
                            x_amount := x_amount || r.amount;
                        END LOOP;
                    END IF;
                END IF;
            WHEN 'capture', 'void', 'expire' THEN
                jkind[i] := p_kind[i];
                SELECT * INTO hold FROM ledger.holds h WHERE h.id = p_ref[i];
                IF NOT FOUND THEN
                    st[i] := 'invalid'; det[i] := 'hold ' || p_ref[i] || ' does not exist';
                ELSIF hold.state <> 'pending' THEN
                    st[i] := 'invalid'; det[i] := 'hold ' || p_ref[i] || ' is already ' || hold.state;
                ELSIF p_ref[i] = ANY (hold_of) THEN
                    st[i] := 'conflict'; det[i] := 'hold ' || p_ref[i] || ' is resolved by another command in this batch';
                ELSIF p_kind[i] = 'capture' AND hold.expires_at <= now() THEN
                    st[i] := 'declined'; why_code[i] := 'expired';
                    det[i] := 'hold ' || p_ref[i] || ' expired at ' || hold.expires_at;
                ELSIF p_kind[i] = 'expire' AND hold.expires_at > now() THEN
                    st[i] := 'invalid'; det[i] := 'hold ' || p_ref[i] || ' does not expire until ' || hold.expires_at;
                ELSIF p_kind[i] = 'capture' AND coalesce(p_amount[i], hold.amount) > hold.amount THEN
                    st[i] := 'invalid';
                    det[i] := 'capture of ' || p_amount[i] || ' exceeds hold ' || p_ref[i] || ' of ' || hold.amount;
                ELSE
                    hold_of[i] := p_ref[i];
                    x_op := x_op || 'release'::text;
                    x_debit := x_debit || hold.debit_account_id;
                    x_credit := x_credit || hold.credit_account_id;
                    x_amount := x_amount || hold.amount;
                    IF p_kind[i] = 'capture' THEN
                        x_op := x_op || 'post'::text;
                        x_debit := x_debit || hold.debit_account_id;
                        x_credit := x_credit || hold.credit_account_id;
                        x_amount := x_amount || coalesce(p_amount[i], hold.amount);
                        -- A capture's own legs (a fee) post in the same journal, after the captured leg.
                        WHILE leg_lo <= nl AND p_leg_cmd[leg_lo] < i LOOP leg_lo := leg_lo + 1; END LOOP;
                        j := leg_lo;
                        WHILE j <= nl AND p_leg_cmd[j] = i LOOP
                            x_op := x_op || 'post'::text;
                            x_debit := x_debit || p_leg_debit[j];
                            x_credit := x_credit || p_leg_credit[j];
                            x_amount := x_amount || p_leg_amount[j];
                            j := j + 1;
                        END LOOP;
                    END IF;
                END IF;
            ELSE
                st[i] := 'invalid'; det[i] := 'unknown command kind ' || coalesce(p_kind[i], 'NULL');
            END CASE;
        END IF;
        x_last[i] := coalesce(array_length(x_op, 1), 0);
    END LOOP;

    -- 4. Lock every touched account in id order: the one lock order that
    --    makes deadlocks between concurrent batches impossible.
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.asset ORDER BY a.id),
           array_agg(a.normal_side = 'credit' ORDER BY a.id), array_agg(a.limit_mode ORDER BY a.id),
           array_agg(a.status ORDER BY a.id), array_agg(a.posted ORDER BY a.id), array_agg(a.held ORDER BY a.id)
      INTO a_id, a_asset, a_credit, a_limit, a_status, a_posted, a_held
      FROM (SELECT acc.* FROM ledger.accounts acc
             WHERE acc.id = ANY (x_debit || x_credit) ORDER BY acc.id FOR UPDATE) a;
    IF a_id IS NULL THEN a_id := '{}'; END IF;
    a_dirty := array_fill(false, ARRAY[greatest(coalesce(array_length(a_id, 1), 0), 1)]);

    -- 5. Decide, command by command, over the in-memory balances.
    FOR i IN 1..n LOOP
        CONTINUE WHEN st[i] IS NOT NULL;
        ok := true; why := NULL;
        snap_k := '{}'; snap_p := '{}'; snap_h := '{}';
        mark := coalesce(array_length(e_journal, 1), 0);
        jid[i] := nextval('ledger.journal_id_seq');
        leg := 0;
        FOR j IN x_first[i]..x_last[i] LOOP
            kd := array_position(a_id, x_debit[j]);
            kc := array_position(a_id, x_credit[j]);
            amt := x_amount[j];
            IF kd IS NULL OR kc IS NULL THEN
                ok := false; st[i] := 'invalid';
                why := 'unknown account ' || CASE WHEN kd IS NULL THEN x_debit[j] ELSE x_credit[j] END;
                EXIT;
            END IF;
            IF a_asset[kd] <> a_asset[kc] THEN
                ok := false; st[i] := 'invalid';
                why := 'asset mismatch: account ' || x_debit[j] || ' is ' || a_asset[kd]
                       || ', account ' || x_credit[j] || ' is ' || a_asset[kc];
                EXIT;
            END IF;
            IF x_op[j] <> 'release' AND (a_status[kd] <> 'active' OR a_status[kc] <> 'active') THEN
                ok := false; st[i] := 'declined'; why_code[i] := 'inactive';
                why := 'account ' || CASE WHEN a_status[kd] <> 'active' THEN x_debit[j] ELSE x_credit[j] END
                       || ' is ' || CASE WHEN a_status[kd] <> 'active' THEN a_status[kd] ELSE a_status[kc] END;
                EXIT;
            END IF;
            IF NOT (kd = ANY (snap_k)) THEN
                snap_k := snap_k || kd; snap_p := snap_p || a_posted[kd]; snap_h := snap_h || a_held[kd];
            END IF;
            IF NOT (kc = ANY (snap_k)) THEN
                snap_k := snap_k || kc; snap_p := snap_p || a_posted[kc]; snap_h := snap_h || a_held[kc];
            END IF;
            IF x_op[j] = 'post' THEN
                a_posted[kd] := a_posted[kd] - amt;
                a_posted[kc] := a_posted[kc] + amt;
                leg := leg + 1;
                e_journal := e_journal || jid[i]; e_leg := e_leg || leg::smallint;
                e_account := e_account || x_debit[j]; e_asset := e_asset || a_asset[kd];
                e_amount := e_amount || (-amt); e_balance := e_balance || a_posted[kd];
                leg := leg + 1;
                e_journal := e_journal || jid[i]; e_leg := e_leg || leg::smallint;
                e_account := e_account || x_credit[j]; e_asset := e_asset || a_asset[kc];
                e_amount := e_amount || amt; e_balance := e_balance || a_posted[kc];
            ELSE
                -- A hold reserves whatever the transfer would take from a natural
                -- balance; a release gives that reservation back.
                IF a_credit[kd] THEN
                    a_held[kd] := a_held[kd] + CASE x_op[j] WHEN 'hold' THEN amt ELSE -amt END;
                END IF;
                IF NOT a_credit[kc] THEN
                    a_held[kc] := a_held[kc] + CASE x_op[j] WHEN 'hold' THEN amt ELSE -amt END;
                END IF;
            END IF;
        END LOOP;
        IF ok THEN
            FOR s IN 1..coalesce(array_length(snap_k, 1), 0) LOOP
                k := snap_k[s];
                nat := CASE WHEN a_credit[k] THEN a_posted[k] ELSE -a_posted[k] END;
                was := CASE WHEN a_credit[k] THEN snap_p[s] ELSE -snap_p[s] END - snap_h[s];
                -- Only a command that lowers what is available can break the limit: a release,
                -- an expiry or a capture within its hold never does, even on an account a
                -- claw-back left below zero (a hold must always be able to end).
                IF nat - a_held[k] < 0 AND nat - a_held[k] < was
                   AND (a_limit[k] = 'non_negative' OR (a_limit[k] = 'guarded' AND NOT coalesce(p_force[i], false))) THEN
                    ok := false; st[i] := 'declined'; why_code[i] := 'limit';
                    why := 'account ' || a_id[k] || ' would go below its limit (available '
                           || (nat - a_held[k]) || ' after this command)';
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF ok AND has_guard AND p_guard[i] IS NOT NULL AND p_guard[i] = ANY (g_taken) THEN
            ok := false; st[i] := 'conflict'; why_code[i] := 'guard';
            why := 'guard ' || p_guard[i] || ' was taken by another command in this batch';
        END IF;
        IF ok THEN
            st[i] := 'posted';
            IF has_guard AND p_guard[i] IS NOT NULL THEN g_taken := g_taken || p_guard[i]; END IF;
            e_first[i] := mark + 1;
            e_last[i] := coalesce(array_length(e_journal, 1), 0);
            FOREACH k IN ARRAY snap_k LOOP a_dirty[k] := true; END LOOP;
            IF p_kind[i] = 'hold' THEN
                h_id := h_id || jid[i]; h_debit := h_debit || x_debit[x_first[i]];
                h_credit := h_credit || x_credit[x_first[i]]; h_amount := h_amount || x_amount[x_first[i]];
                h_timeout := h_timeout || p_timeout_s[i];
            ELSIF hold_of[i] IS NOT NULL THEN
                r_id := r_id || hold_of[i]; r_by := r_by || jid[i];
                r_state := r_state || CASE p_kind[i] WHEN 'capture' THEN 'captured'
                                                     WHEN 'void' THEN 'voided' ELSE 'expired' END;
            END IF;
        ELSE
            det[i] := why;
            jid[i] := NULL;
            FOR k IN 1..coalesce(array_length(snap_k, 1), 0) LOOP
                a_posted[snap_k[k]] := snap_p[k]; a_held[snap_k[k]] := snap_h[k];
            END LOOP;
            IF mark < coalesce(array_length(e_journal, 1), 0) THEN
                e_journal := e_journal[1:mark]; e_leg := e_leg[1:mark]; e_account := e_account[1:mark];
                e_asset := e_asset[1:mark]; e_amount := e_amount[1:mark]; e_balance := e_balance[1:mark];
            END IF;
        END IF;
    END LOOP;

    -- 6. Set-based writes.
    INSERT INTO ledger.journals (id, idempotency_key, content_hash, kind, business_date,
                                 reverses_journal_id, resolves_hold_id, metadata, guard_key)
    SELECT u.jid, u.key, u.hash, u.kind, v_date, u.rev, u.hold, coalesce(u.meta, '{}'::jsonb), u.guard
      FROM unnest(jid, p_key, p_hash, jkind, rev_of, hold_of, p_meta, st, p_guard)
           AS u(jid, key, hash, kind, rev, hold, meta, st, guard)
     WHERE u.st = 'posted'
     ORDER BY u.jid;

    IF coalesce(array_length(e_journal, 1), 0) > 0 THEN
        INSERT INTO ledger.entries (journal_id, leg, account_id, asset, amount, balance_after)
        SELECT * FROM unnest(e_journal, e_leg, e_account, e_asset, e_amount, e_balance);
    END IF;

    IF coalesce(array_length(h_id, 1), 0) > 0 THEN
        INSERT INTO ledger.holds (id, debit_account_id, credit_account_id, amount, expires_at)
        SELECT u.id, u.d, u.c, u.a, now() + make_interval(secs => u.t)
          FROM unnest(h_id, h_debit, h_credit, h_amount, h_timeout) AS u(id, d, c, a, t);
    END IF;

    IF coalesce(array_length(r_id, 1), 0) > 0 THEN
        UPDATE ledger.holds h SET state = u.s, resolved_by = u.b
          FROM unnest(r_id, r_state, r_by) AS u(id, s, b) WHERE h.id = u.id;
    END IF;

    UPDATE ledger.accounts acc SET posted = u.p, held = u.h
      FROM unnest(a_id, a_posted, a_held, a_dirty) AS u(id, p, h, dirty)
     WHERE acc.id = u.id AND u.dirty;

    -- 7. One row per command.
    FOR i IN 1..n LOOP
        idx := i; status := st[i]; journal_id := jid[i]; detail := det[i]; reason := why_code[i];
        business_date := NULL; accounts := NULL; balances := NULL;
        IF st[i] = 'posted' THEN
            business_date := v_date;
            IF e_last[i] >= e_first[i] THEN
                accounts := e_account[e_first[i]:e_last[i]];
                balances := e_balance[e_first[i]:e_last[i]];
            END IF;
        ELSIF st[i] = 'exists' THEN
            SELECT jj.business_date INTO business_date FROM ledger.journals jj WHERE jj.id = jid[i];
            SELECT array_agg(e.account_id ORDER BY e.leg), array_agg(e.balance_after ORDER BY e.leg)
              INTO accounts, balances
              FROM ledger.entries e WHERE e.journal_id = jid[i];
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
