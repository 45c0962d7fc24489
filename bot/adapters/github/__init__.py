"""The code-host port over GitHub's REST API (PyGithub), and its store-kept rate-limit block."""
