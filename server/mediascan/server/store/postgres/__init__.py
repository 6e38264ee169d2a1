"""The PostgreSQL store: several servers share one database (`--db postgresql://...`)."""
