"""The cycle, one stage per module: poll → track → triage → match → plan → execute →
verify → lifecycle → outbox. Stages receive their collaborators as typed parts and
ports (``parts``, ``ports``); they never import the interfaces, an adapter or a fake."""
