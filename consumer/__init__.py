"""Consumer daemons: read snapshot entries from the stream shards, write changes to Postgres, acknowledge."""
