"""Recording and compliance replay: the recorder, object storage, finalisation,
the search index, the audit log and the replay API."""
