"""Driver code behind the bot's ports (new adapters live here; older ones move later)."""
