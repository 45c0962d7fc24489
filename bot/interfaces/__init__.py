"""Entry points and the composition root: the CLI, the scheduler, the HTTP server, and the
wiring that builds each tick's parts from settings (see docs/architecture.md)."""
