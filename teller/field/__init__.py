"""On-site + remote (docs/field.md): field visits, their GPS and evidence, and the ways a
field device's media comes in (the SDK body camera, WHIP, RTSP through `teller ingest`)."""
