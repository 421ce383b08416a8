-- Ids minted inside a statement (outgoing webhook deliveries, written by the
-- event log's appending statement: how many there are is known only there).
-- Same shape as domain.ids.new_id: "<prefix>_" + 26 Crockford base32
-- characters, the first 10 the milliseconds since the epoch, so ids sort by
-- creation time across processes; the other 16 random.
CREATE FUNCTION paycast_new_id(prefix text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    body text := '';
BEGIN
    FOR i IN 1..10 LOOP
        body := substr(alphabet, (ms % 32)::int + 1, 1) || body;
        ms := ms / 32;
    END LOOP;
    FOR i IN 1..16 LOOP
        body := body || substr(alphabet, floor(random() * 32)::int + 1, 1);
    END LOOP;
    RETURN prefix || '_' || body;
END $$;
