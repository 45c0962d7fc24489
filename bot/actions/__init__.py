"""Built-in remediation actions: one module per action, each with preview/execute/verify."""
